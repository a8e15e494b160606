#!/bin/sh
# The guest's side of `npm run bench:xen --trace` (busybox sh; the guest boots with xr.trace=1):
#   trace.sh start   at boot: iproute2's `ip -ts monitor` to /run/ipmon.log, and the kernel's own timeline of a
#                    resume in its trace ring (CLOCK_MONOTONIC): each netfront's resume, carrier off and on and
#                    re-attach, the thaw of user space, the agent's xenstore reads and writes (/dev/xen/xenbus)
#                    and link changes, and every transmitted packet (net_dev_xmit); where the time between
#                    the thaw and a frontend's re-attach goes: the otherend watch events and netfront's
#                    netback_changed (with the backend state), the kernel's own xenstore requests (xs_talkv, with
#                    its return), who waits for the rtnl lock and when they get it
#   trace.sh dump    after a migration: both, the trace trimmed to 3 s from the resume; then both emptied
T=/sys/kernel/tracing
case ${1:-} in
start)
  /usr/sbin/ip -ts monitor link address route neigh </dev/null >>/run/ipmon.log 2>&1 &
  mount -t tracefs nodev $T 2>/dev/null
  echo mono >$T/trace_clock
  echo 4096 >$T/buffer_size_kb
  # Functions reached through pointers or exported (never inlined); +0(%di) is net_device.name, its first field.
  # r: fires as the function returns (a read by the agent: when xenstore's answer or a watch event reached it).
  for probe in 'p:xr/resume netfront_resume' 'p:xr/thaw thaw_processes' \
    'p:xr/carrier_on netif_carrier_on name=+0(%di):string' 'p:xr/carrier_off netif_carrier_off name=+0(%di):string' \
    'p:xr/attach netif_device_attach name=+0(%di):string' 'p:xr/detach netif_device_detach name=+0(%di):string' \
    'p:xr/change_flags dev_change_flags name=+0(%di):string flags=%si:x32' \
    'p:xr/xs_write xenbus_file_write' 'r:xr/xs_read xenbus_file_read ret=$retval' 'p:xr/linkwatch linkwatch_event' \
    'p:xr/otherend otherend_changed path=+0(%si):string' 'p:xr/nb_changed netback_changed state=%si:u32' \
    'p:xr/xs_talk xs_talkv type=%si:u32' 'r:xr/xs_talked xs_talkv' \
    'p:xr/rtnl_want rtnl_lock' 'r:xr/rtnl_got rtnl_lock' 'r:xr/flags_done dev_change_flags'; do
    echo "$probe" >>$T/kprobe_events 2>/dev/null || echo "trace.sh: no probe $probe" >&2
  done
  echo 1 >$T/events/xr/enable
  echo 1 >$T/events/net/net_dev_xmit/enable
  # Neighbour discovery as the kernel runs it (entries made, probes, answers): whether a first packet waits.
  for e in neigh_create neigh_update_done neigh_timer_handler neigh_event_send_dead; do
    [ -d $T/events/neigh/$e ] && echo 1 >$T/events/neigh/$e/enable
  done
  exit 0
  ;;
dump)
  echo XR-IPMON
  cat /run/ipmon.log
  : >/run/ipmon.log
  echo XR-KTRACE
  # From the first resume on, 3 s of it (the timestamp is the field that ends in a colon after the flags).
  awk '{ t = -1; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = $i + 0; break } }
       / resume: / && !r { r = t }
       r && t >= 0 && t <= r + 3 { print }' $T/trace | head -n 1500
  echo >$T/trace
  ;;
*) echo "usage: trace.sh start|dump" >&2; exit 2 ;;
esac
