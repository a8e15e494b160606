#!/bin/bash
# npm run bench:xen — the paper's three subjects (Watanabe et al., Table 2 and Figure 4) on real Xen, in one run
# on the rig of npm run test:xen (opt-in; not part of npm test): ordinary live migration inside one subnet,
# global migration without the method (plain, SLAAC), global migration with it (xenroam prepare + migrate),
# for each guest memory size, over a Dom0-to-Dom0 path shaped with tc and unshaped. Writes the table, every
# sample (JSON) and a Figure-4-style SVG. Progress on stderr. Cleans up everything it starts, also on Ctrl-C.
set -euo pipefail
X=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$X/../.." && pwd)
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
RUN=${RUN:-$CACHE/run}
export XENROAM_XEN_CACHE=$CACHE RUN

usage() {
  cat <<EOF
usage: npm run bench:xen -- [options]        (as root; builds and boots like npm run test:xen)

  --memory LIST     guest memory sizes in MB (default 256,512). 256 is the smallest power of two the guest
                    fits in: its initramfs lives in RAM and carries the agent's runtime (Bun; 107 MB
                    unpacked; the guest boots from 232 MB, not at 224)
  --runs N          migrations per subject, link and size (default 2); they alternate xa->xb, xb->xa
  --subjects LIST   of ordinary,without,method (default all three)
  --links LIST      of shaped,unshaped (default both)
  --rate MBIT       the shaped link (default 100: the paper's)
  --deadline S      how long after xenroam returns a subject may take to recover before it is reported as
                    not recovered (default 60)
  --out PREFIX      where the results go (default docs/bench/xen-<date>): PREFIX.json, .md, .svg
  --trace           also capture ICMPv6 and the probes on each site's LAN at the router during every measured
                    migration (tcpdump; lan-a.pcap, lan-b.pcap in the raw logs), and the guest's own link,
                    address, route and neighbour events, its kernel's timeline of the resume and its agent's log
                    (guest.log): where a downtime goes. It loads the guest: keep traced runs out of tables

Environment:
  XENROAM_XEN_HOST_CPUS  CPUs of each emulated host (default 2: Dom0 pinned to pCPU 0, the guest on pCPU 1, as
                         Xen's tuning advice for Dom0 has it; 1: Dom0 and the guest share one pCPU, the rig of
                         the runs before 2026-12-04 afternoon)
  XENROAM_BENCH_OPTS     extra global options for the method's xenroam migrate (e.g. --no-carrier-hold,
                         --no-announce), to measure what one part of the method buys

The full default run (2 sizes x 3 subjects x 2 links x 2 runs = 24 migrations) takes about 26 minutes here;
with --runs 3, 36 migrations, 38 minutes (2 cores, QEMU TCG; 2261 s on 2026-12-04): a measured migration
costs 35-90 s under emulation (the method's most: its prepare and two xenroam start-ups), each guest boot
~25 s, the hosts ~40 s. Raw logs stay in $CACHE/run/bench-<time>/, each guest's console (the agent's log
among it) in console-xa.log and console-xb.log there.
EOF
}

MEMORY=256,512 RUNS=2 SUBJECTS=ordinary,without,method LINKS=shaped,unshaped RATE=100 DEADLINE=60 TRACE=
OUT=$REPO/docs/bench/xen-$(date +%F)
ARGS="$*"
while [ $# -gt 0 ]; do
  case $1 in
  --memory) MEMORY=$2 ;;
  --runs) RUNS=$2 ;;
  --subjects) SUBJECTS=$2 ;;
  --links) LINKS=$2 ;;
  --rate) RATE=$2 ;;
  --deadline) DEADLINE=$2 ;;
  --out) OUT=$(realpath -m "$2") ;;
  -h | --help) usage; exit 0 ;;
  --trace) TRACE=1; shift; continue ;;
  *) echo "bench.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  [ $# -ge 2 ] || { echo "bench.sh: $1 needs a value" >&2; exit 2; }
  shift 2
done
T0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
IFS=, read -ra MEMS <<<"$MEMORY"
IFS=, read -ra SUBJ <<<"$SUBJECTS"
IFS=, read -ra LNKS <<<"$LINKS"
for m in "${MEMS[@]}"; do [[ $m =~ ^[0-9]+$ ]] && ((m >= 232 && m <= 1024)) || fail "--memory: $m is not 232..1024 MB"; done
for s in "${SUBJ[@]}"; do [[ $s =~ ^(ordinary|without|method)$ ]] || fail "--subjects: $s is not ordinary|without|method"; done
[[ ${XENROAM_BENCH_OPTS:-} =~ ^(\ *--[a-z][a-z-]*)*\ *$ ]] || fail "XENROAM_BENCH_OPTS takes xenroam options such as --no-carrier-hold, not \"${XENROAM_BENCH_OPTS:-}\""
for l in "${LNKS[@]}"; do [[ $l =~ ^(shaped|unshaped)$ ]] || fail "--links: $l is not shaped|unshaped"; done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || fail "--runs: $RUNS"
[[ $RATE =~ ^[1-9][0-9]*$ ]] || fail "--rate: $RATE"
[[ $DEADLINE =~ ^[1-9][0-9]*$ ]] || fail "--deadline: $DEADLINE"
has() { local x; for x in "${@:2}"; do [ "$x" = "$1" ] && return 0; done; return 1; }
[ "$(id -u)" = 0 ] || fail "run as root (namespaces, taps, QEMU)"
for c in qemu-system-x86_64 socat radvd ssh; do
  command -v $c >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 socat radvd openssh-client >/dev/null; break; }
done
if [ -n "$TRACE" ] && ! command -v tcpdump >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tcpdump >/dev/null
fi

# One rig run at a time (test.sh takes the same lock): the namespaces, taps and cache are shared.
mkdir -p "$CACHE" && exec 9>>"$CACHE/rig.lock"
flock -n 9 || fail "another real-Xen run (test:xen or bench:xen) holds $CACHE/rig.lock (a rig kept for a look? kill \$(cat $RUN/x?.pid); bash $X/net.sh down)"

say "building (cached in $CACHE)"
bash "$X/build-hypervisor.sh"
bash "$X/build-images.sh" --rebuild-dom0
BENCH=$RUN/bench-$(date +%Y%m%dT%H%M%S)

PINGS=()
cleanup() {
  trap - INT TERM
  for p in "${PINGS[@]}"; do kill "$p" 2>/dev/null || true; done
  for h in xa xb; do [ -f "$RUN/$h.pid" ] && kill "$(cat "$RUN/$h.pid")" 2>/dev/null; rm -f "$RUN/$h.pid"; done
  bash "$X/net.sh" down >/dev/null 2>&1 || true
  say "cleaned up (raw logs: ${BENCH:-none})"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM
for h in xa xb; do [ -f "$RUN/$h.pid" ] && kill "$(cat "$RUN/$h.pid")" 2>/dev/null; rm -f "$RUN/$h.pid"; done
bash "$X/net.sh" down >/dev/null 2>&1 || true
bash "$X/net.sh" up >/dev/null
mkdir -p "$BENCH" "$(dirname "$OUT")"
rm -f "$RUN"/x?.log "$RUN"/ssh-*

# The mobility layer for the method (as in test.sh): the control server on the router, the correspondent agent
# on the CN. The VM->CN probe's echo server on the CN too.
HOA=2001:db8:f::5
CONTROL="http://[2001:db8:c::1]:7360"
CN=2001:db8:c::100
rm -f "$RUN"/control.* "$RUN"/*.token
ctl() { node "$REPO/packages/control/dist/src/main.js" "$@"; }
ctl init --key "$RUN/control.key" --admin-token-file "$RUN/admin.token" >/dev/null
ip netns exec xrx-router node "$REPO/packages/control/dist/src/main.js" serve --listen "[2001:db8:c::1]:7360" \
  --database "$RUN/control.db" --key "$RUN/control.key" --admin-token-file "$RUN/admin.token" >/dev/null 2>"$BENCH/control.log" &
admin() { ip netns exec xrx-router node "$REPO/packages/control/dist/src/main.js" "$@" --server "$CONTROL" --token-file "$RUN/admin.token"; }
for _ in $(seq 50); do admin put-sites "$X/sites.json" >/dev/null 2>&1 && break; sleep 0.2; done
admin add-peer cn | sed -n 's/.*"token": "\(.*\)".*/\1/p' >"$RUN/cn.token"
# Each Dom0's own token (a peer named after the host): xenroam relays the guest's activation with it (test.sh).
for h in xa xb; do admin add-peer $h | sed -n 's/.*"token": "\(.*\)".*/\1/p' >"$RUN/$h.token"; done
[ -s "$RUN/cn.token" ] && [ -s "$RUN/xa.token" ] && [ -s "$RUN/xb.token" ] || fail "the control server did not register the CN and the hosts"
ip netns exec xrx-cn node "$REPO/guest-agent/dist/src/main.js" --correspondent --control "$CONTROL" \
  --token-file "$RUN/cn.token" --public-key "$RUN/control.key.pub" --listen "[$CN]:7361" >"$BENCH/correspondent.log" 2>&1 &
ECHO_LOG=$BENCH/echo.log
ip netns exec xrx-cn node "$X/probe.mjs" echo 7400 >"$ECHO_LOG" 2>&1 &

say "booting two Xen hosts under QEMU (TCG)"
export XENROAM_XEN_HOST_MB=2560 # Dom0 keeps 1408 MB: room for a 1 GB guest arriving
export XENROAM_XEN_HOST_CPUS=${XENROAM_XEN_HOST_CPUS:-2}
# The guest off Dom0's pCPU when there is another (boot-host.sh pins Dom0 to pCPU 0).
GUEST_CPUS=
[ "$XENROAM_XEN_HOST_CPUS" -ge 2 ] && GUEST_CPUS='cpus = "all,^0"'

for h in "xa 2001:db8:a::a/64 fe80::a:1 lan-a" "xb 2001:db8:b::b/64 fe80::b:1 lan-b"; do
  set -- $h
  ip netns exec xrx-router bash "$X/boot-host.sh" "$1" "$2" "$3" "tap,id=n0,ifname=xq-$1,script=no,downscript=no" >/dev/null
  ip netns exec xrx-router ip link set "xq-$1" master "$4" up
done
for _ in $(seq 100); do
  [ "$(grep -al XENROAM-DOM0-READY "$RUN"/x?.log 2>/dev/null | wc -l)" = 2 ] && break
  grep -aq "Kernel panic" "$RUN"/x?.log 2>/dev/null && fail "a Dom0 panicked (see $RUN/*.log)"
  sleep 3
done
[ "$(grep -al XENROAM-DOM0-READY "$RUN"/x?.log | wc -l)" = 2 ] || fail "the hosts did not boot"

# A command in a Dom0 over ssh from the router (one multiplexed connection per address).
declare -A DOM0_ADDR=([xa]=2001:db8:a::a [xb]=2001:db8:b::b)
SSH=(ssh -i "$CACHE/id_ed25519" -o BatchMode=yes -o ConnectTimeout=20 -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ControlMaster=auto -o "ControlPath=$RUN/ssh-%h" -o ControlPersist=3600)
dom0() { # host timeout_s command...
  local h=$1 t=$2; shift 2
  timeout "$t" ip netns exec xrx-router "${SSH[@]}" "root@${DOM0_ADDR[$h]}" "$*"
}
# A command typed into the guest's console shell (xl console on its host): the guest has no other way in.
# Prints what the console showed.
guest_sh() { # host command
  { sleep 1; printf '%s\r' "$2"; sleep 2; } |
    timeout 20 ip netns exec xrx-router "${SSH[@]}" -tt "root@${DOM0_ADDR[$1]}" 'timeout 4 xl console domu' 2>&1 | tr -d '\r' || true
}
guest_logs() { # host: the guest's events and kernel trace (scripts/xen/domu/trace.sh) and its agent's log since the last call
  { sleep 1; printf '%s\r' 'echo XR-LOG-BEGIN; sh /xenroam-bench/trace.sh dump; echo XR-AGENT-LOG; cat /run/agent.log; echo XR-LOG-END; : >/run/agent.log'; sleep 8; } |
    timeout 30 ip netns exec xrx-router "${SSH[@]}" -tt "root@${DOM0_ADDR[$1]}" 'timeout 11 xl console domu' 2>&1 | tr -d '\r' |
    sed -n '/^XR-LOG-BEGIN/,/^XR-LOG-END/p' || true
}
for h in xa xb; do
  dom0 $h 60 "mkdir -p /etc/xenroam && umask 077 && printf %s $(cat "$RUN/$h.token") > /etc/xenroam/host.token" ||
    fail "no ssh to $h, or could not give it its control token"
done
say "both Dom0s up: $(dom0 xa 30 "xl info | sed -n 's/^xen_version *: //p'") on $(dom0 xa 30 'uname -r')"
printf '{"xen":"%s (shadow paging, PV guests)","dom0 kernel":"%s","qemu":"%s (TCG, -cpu qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt, %s CPUs and %s MB per host; %s)","guest":"%s"}\n' \
  "$(dom0 xa 30 "xl info | sed -n 's/^xen_version *: //p'")" "$(dom0 xa 30 'uname -r')" \
  "$(qemu-system-x86_64 --version | head -1 | sed 's/^QEMU emulator version //')" "$XENROAM_XEN_HOST_CPUS" "$XENROAM_XEN_HOST_MB" \
  "$([ "$XENROAM_XEN_HOST_CPUS" -ge 2 ] && echo 'Dom0 pinned to pCPU 0, the guest on the others' || echo 'Dom0 and the guest share one pCPU')" \
  "PV, 1 vCPU, the Dom0 kernel; initramfs in RAM (busybox, xenroam-agent with its own runtime, ${XENROAM_XEN_AGENT_RUNTIME:-bun}; about 110 MB unpacked)" >"$BENCH/facts.json"

# ---- the topology ----
# Two sites (xa on lan-a, xb on lan-b), or one: xb's tap moved onto lan-a, its Dom0 given a site-a address.
TOPO=two
topology() { # one|two
  [ "$TOPO" = "$1" ] && return 0
  # The route changes in the background, after this ssh session has returned: changed under it, the session's
  # own replies would go the new way before the tap has moved (one full run failed so).
  if [ "$1" = one ]; then
    dom0 xb 30 'ip -6 addr replace 2001:db8:a::b/64 dev xenbr0 nodad; (sleep 1; ip -6 route replace default via fe80::a:1 dev xenbr0) >/dev/null 2>&1 </dev/null &'
    sleep 1.5
    ip netns exec xrx-router ip link set xq-xb master lan-a
    DOM0_ADDR[xb]=2001:db8:a::b
  else
    dom0 xb 30 '(sleep 1; ip -6 route replace default via fe80::b:1 dev xenbr0) >/dev/null 2>&1 </dev/null &'
    sleep 1.5
    ip netns exec xrx-router ip link set xq-xb master lan-b
    DOM0_ADDR[xb]=2001:db8:b::b
    dom0 xb 30 'ip -6 addr del 2001:db8:a::b/64 dev xenbr0' || true
  fi
  TOPO=$1
  # ssh's multiplexing masters to xb's addresses may hold a connection whose path just changed (or changed at
  # the last switch): a stale one hangs every command sent through it. Fresh connections from here on.
  local a
  for a in 2001:db8:a::b 2001:db8:b::b; do
    timeout 5 ip netns exec xrx-router "${SSH[@]}" -O exit "root@$a" >/dev/null 2>&1 || true
    rm -f "$RUN/ssh-$a"
  done
  local ok=
  for _ in $(seq 10); do
    dom0 xb 30 'ip -6 route | grep ^default' >/dev/null && { ok=1; break; }
    sleep 2
  done
  [ -n "$ok" ] || fail "xb has no route after the topology change (or no ssh to ${DOM0_ADDR[xb]})"
  dom0 xb 30 true || fail "no ssh to xb at ${DOM0_ADDR[xb]}"
  dom0 xa 30 "timeout 10 bash -c 'exec 3<>/dev/tcp/${DOM0_ADDR[xb]}/22'" || fail "xa does not reach xb at ${DOM0_ADDR[xb]}"
  say "topology: $([ "$1" = one ] && echo "one subnet (xb's tap on lan-a, its Dom0 at ${DOM0_ADDR[xb]})" || echo "two sites (xa on lan-a, xb on lan-b)")"
}
# Every Dom0 with exactly its static address and route (boot-host.sh keeps RAs away; this keeps it certain).
for h in "xa fe80::a:1" "xb fe80::b:1"; do
  set -- $h
  dom0 $1 30 "ip -6 route replace default via $2 dev xenbr0; ip -6 addr flush dev xenbr0 scope global dynamic"
done

shape() { # shaped|unshaped: tbf on both taps' egress, i.e. each direction of the Dom0-to-Dom0 path
  local h
  for h in xa xb; do
    if [ "$1" = shaped ]; then
      ip netns exec xrx-router tc qdisc replace dev "xq-$h" root tbf rate "${RATE}mbit" burst 64kb latency 50ms
    else
      ip netns exec xrx-router tc qdisc del dev "xq-$h" root 2>/dev/null || true
    fi
  done
}

# ---- the guest ----
# plain: no mobility layer, MACs ..:20/..:21 (never registered with the control server, so the CN's rewrite
# cannot touch its addresses); mobile: the home address $HOA, MACs ..:10/..:11 (as in test.sh).
own() { # site kind: the guest's primary-vif SLAAC address on a site
  if [ "$2" = plain ]; then echo "2001:db8:$1:0:216:3eff:fe00:20"; else echo "2001:db8:$1:0:216:3eff:fe00:$([ "$1" = a ] && echo 10 || echo 11)"; fi
}
HERE=
guest() { # kind memory: a fresh guest on xa
  local kind=$1 mem=$2 extra macs target
  dom0 xa 60 'xl destroy domu 2>/dev/null; true' || true
  dom0 xb 60 'xl destroy domu 2>/dev/null; true' || true
  # rootfstype=ramfs: the initramfs (107 MB unpacked) outgrows tmpfs's half-of-RAM limit below ~300 MB.
  extra="console=hvc0 quiet rootfstype=ramfs rdinit=/bench-init xr.probe=$CN,7400"
  [ -n "$TRACE" ] && extra="$extra xr.trace=1"
  macs="'mac=00:16:3e:00:00:20,bridge=xenbr0', 'mac=00:16:3e:00:00:21,bridge=xrpark0'"
  target=$(own a plain)
  if [ "$kind" = mobile ]; then
    local token
    token=$(admin add-vm domu --hoa $HOA --mac 00:16:3e:00:00:10 --mac 00:16:3e:00:00:11 | sed -n 's/.*"token": "\(.*\)".*/\1/p')
    [ -n "$token" ] || fail "the control server did not register the guest"
    extra="$extra xr.hoa=$HOA xr.vm=domu xr.control=$CONTROL xr.token=$token xr.peer=[$CN]:7361"
    macs="'mac=00:16:3e:00:00:10,bridge=xenbr0', 'mac=00:16:3e:00:00:11,bridge=xrpark0'"
    target=$HOA
  fi
  local cfg
  cfg=$(printf '%s\n' 'name = "domu"' 'type = "pv"' 'kernel = "/xenroam-test/domu-vmlinuz"' \
    'ramdisk = "/xenroam-test/domu.cpio.zst"' "extra = \"$extra\"" "memory = $mem" 'vcpus = 1' \
    "vif = [ $macs ]" 'on_crash = "preserve"' ${GUEST_CPUS:+"$GUEST_CPUS"})
  # Both Dom0s: the one the guest leaves sends its own copy with xl migrate.
  for h in xa xb; do printf '%s\n' "$cfg" | dom0 $h 30 'cat > /etc/xen/domu.cfg'; done
  dom0 xa 120 'xl create /etc/xen/domu.cfg >/dev/null 2>&1' || fail "xl create ($kind guest, $mem MB) failed"
  HERE=xa
  for _ in $(seq 90); do ip netns exec xrx-cn ping -6 -c 1 -W 1 "$target" >/dev/null 2>&1 && break; sleep 1; done
  ip netns exec xrx-cn ping -6 -c 1 -W 2 "$target" >/dev/null 2>&1 || fail "the $kind guest ($mem MB) never answered at $target"
  say "$kind guest up on xa with $mem MB (answers at $target)"
}
where() { # the host the guest runs on now
  local h
  for h in xa xb; do dom0 $h 30 'xl domid domu' >/dev/null 2>&1 && { echo $h; return; }; done
}
other() { [ "$1" = xa ] && echo xb || echo xa; }
site() { [ "$1" = xa ] && echo a || { [ "$TOPO" = one ] && echo a || echo b; }; }

# ---- one measured migration ----
qemu_sched() { # host idle|other: that host's QEMU, every thread, under SCHED_IDLE or back to SCHED_OTHER
  local t
  for t in /proc/"$(cat "$RUN/$1.pid")"/task/*; do chrt "--$2" -p 0 "${t##*/}" >/dev/null 2>&1 || true; done
}
RUNS_FILE=$BENCH/runs.jsonl
SEQ=0
measure() { # subject link memory run
  local subject=$1 link=$2 mem=$3 r=$4 from=$HERE to kind=plain dir t cmd
  to=$(other "$from")
  [ "$subject" = method ] && kind=mobile
  SEQ=$((SEQ + 1))
  dir=$BENCH/$(printf '%03d' $SEQ)-$subject-$link-$mem-$r
  mkdir -p "$dir"
  # The CN pings (every 20 ms): the guest's own address on each site it may be on; the method: the HoA, and
  # its own addresses (the MoA) beside.
  local -a targets=() roles=()
  case $subject in
  ordinary) targets=("$(own a plain)") roles=(primary) ;;
  without) targets=("$(own a plain)" "$(own b plain)") roles=(primary primary) ;;
  method) targets=("$HOA" "$(own a mobile)" "$(own b mobile)") roles=(primary own own) ;;
  esac
  if [ "$subject" = without ]; then
    # Back to a clean steady state first, as the lab bench does for its baselines (it favours them): what the
    # guest kept from the site it goes to (address, prefix route, router) would otherwise be found there.
    local o
    o=$(site "$to")
    guest_sh "$from" "ip -6 addr del $(own "$o" plain)/64 dev eth0; ip -6 route del 2001:db8:$o::/64 dev eth0; ip -6 route del default via fe80::$o:1 dev eth0; ip -6 neigh del fe80::$o:1 dev eth0; echo XR-LEFT-\$(ip -6 addr show dev eth0 | grep -c 2001:db8:$o:)" >"$dir/reset.log"
    grep -aq 'XR-LEFT-0' "$dir/reset.log" || say "  the guest's reset did not take (site $o's address still there? $dir/reset.log)"
  fi
  local pings_json="" k
  # Every subject carries the same probe load into the guest (it dirties memory and costs its emulated CPU):
  # 20 ms to each address the application would use; the method's own addresses, a diagnostic, at 200 ms.
  local interval
  for k in "${!targets[@]}"; do
    interval=0.02
    [ "${roles[$k]}" = own ] && interval=0.2
    ip netns exec xrx-cn ping -6 -D -n -i $interval -W 1 "${targets[$k]}" >"$dir/ping-$k.log" 2>&1 &
    PINGS+=($!)
    pings_json+="${pings_json:+,}{\"target\":\"${targets[$k]}\",\"role\":\"${roles[$k]}\",\"log\":\"ping-$k.log\"}"
  done
  printf '{"subject":"%s","link":"%s","memoryMb":%s,"run":%s,"from":"%s","to":"%s","pings":[%s],"echoLog":"%s","echoOffset":%s}\n' \
    "$subject" "$link" "$mem" "$r" "$from" "$to" "$pings_json" "$ECHO_LOG" "$(stat -c %s "$ECHO_LOG")" >"$dir/meta.json"
  if [ -n "$TRACE" ]; then
    for k in a b; do
      ip netns exec xrx-router tcpdump -i lan-$k -n -s 200 -U -w "$dir/lan-$k.pcap" 'icmp6 or udp port 7400' >/dev/null 2>&1 &
      PINGS+=($!)
    done
  fi
  # Steady traffic both ways before the migration starts.
  for _ in $(seq 60); do
    sleep 0.5
    node "$X/bench-report.mjs" status "$dir" "$(date +%s%3N)" >"$dir/status" 2>&1 && break
  done
  sleep 1
  [ -n "$(grep -v flowing "$dir/status")" ] && say "  not steady before the migration: $(cat "$dir/status")"
  # The baselines are what an admin runs without xenroam: xl's own migrate over its own ssh transport.
  case $subject in
  ordinary | without) cmd="xl migrate domu ${DOM0_ADDR[$to]}" ;;
  method) cmd="xenroam --host $from --control '$CONTROL' prepare domu --to $to --timeout 60000 && echo XR-PREPARED && xenroam --host $from --control '$CONTROL' ${XENROAM_BENCH_OPTS:-} migrate domu $to --json" ;;
  esac
  # The two emulated hosts share this machine's two cores; real hosts do not. Right after the handoff the source
  # destroys the domain and Xen scrubs its memory (a whole core for ~3 s here), while the destination's Dom0 and
  # guest hand the frontends' reconnection back and forth: sharing the other core, each handoff waits for a
  # time slice, and the more handoffs a subject's resume has, the more it loses — a cost of this rig, not of
  # either subject. So the source's QEMU runs under SCHED_IDLE (every thread) during a measured migration: the
  # destination takes the cores whenever it wants them, as on hardware of its own.
  qemu_sched "$from" idle
  qemu_sched "$to" other
  say "$mem MB, $subject, $link, run $r: $from -> $to"
  # Each output line stamped with the host's clock as it arrives: XR-START is T_ALL's zero. In the background,
  # so that Ctrl-C is not held up by the wait.
  timeout 900 ip netns exec xrx-router "${SSH[@]}" "root@${DOM0_ADDR[$from]}" "echo XR-START; $cmd 2>&1; echo XR-RC \$?" </dev/null 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$dir/xenroam.log" &
  wait $! || true
  local since
  since=$(date +%s%3N)
  grep -q ' XR-RC 0$' "$dir/xenroam.log" && HERE=$to || HERE=$(where)
  # Until both ways flow again (or the deadline), then 3 s more: a second outage would show.
  for _ in $(seq $((DEADLINE * 2))); do
    node "$X/bench-report.mjs" status "$dir" "$since" >"$dir/status" 2>&1 && break
    sleep 0.5
  done
  sleep 3
  for p in "${PINGS[@]}"; do kill "$p" 2>/dev/null || true; done
  PINGS=()
  local ended
  ended=$(date +%s%3N)
  # The guest's own view (its clock; the NA its netfront sends at reconnect is in lan-?.pcap and its carrier
  # event here): when each interface lost and regained carrier, the agent's steps, the routes and neighbours.
  if [ -n "$TRACE" ] && [ -n "$HERE" ]; then
    guest_logs "$HERE" >"$dir/guest.log"
    grep -q '^XR-LOG-END' "$dir/guest.log" || say "  the guest's logs came back incomplete (the console was slow): $dir/guest.log"
  fi
  # Every guest's console as each Dom0 kept it (scripts/xen/dom0/init: xenconsoled --log=guest): the agent's
  # log for every run, traced or not (its lines carry the migration id).
  for h in xa xb; do
    dom0 $h 30 'cat /var/log/xen/console/guest-*.log 2>/dev/null' >"$BENCH/console-$h.log" 2>/dev/null || true
  done
  node "$X/bench-report.mjs" record "$dir" "$ended" >>"$RUNS_FILE"
  if [ -z "$HERE" ]; then
    say "  the guest is on neither host after this run (see $dir/xenroam.log): a fresh one for the next"
    guest "$kind" "$mem"
  fi
}

subject_runs() { # subject memory
  local link r
  for link in "${LNKS[@]}"; do
    shape "$link"
    for r in $(seq "$RUNS"); do measure "$1" "$link" "$2" "$r"; done
  done
}

say "matrix: memory ${MEMS[*]} MB; subjects ${SUBJ[*]}; links ${LNKS[*]} (shaped: $RATE Mbps); $RUNS runs each"
for mem in "${MEMS[@]}"; do
  if has ordinary "${SUBJ[@]}" || has without "${SUBJ[@]}"; then
    if has ordinary "${SUBJ[@]}"; then
      topology one
      guest plain "$mem"
      subject_runs ordinary "$mem"
      if has without "${SUBJ[@]}" && [ "$HERE" = xb ]; then
        # Back to xa (unmeasured) before xb leaves site a.
        dom0 xb 900 "xl migrate domu ${DOM0_ADDR[xa]} >/dev/null 2>&1" || true
        HERE=$(where)
        [ "$HERE" = xa ] || fail "could not bring the guest back to xa"
      fi
    fi
    if has without "${SUBJ[@]}"; then
      topology two
      has ordinary "${SUBJ[@]}" || guest plain "$mem"
      subject_runs without "$mem"
    fi
  fi
  if has method "${SUBJ[@]}"; then
    topology two
    guest mobile "$mem"
    subject_runs method "$mem"
  fi
done
shape unshaped
dom0 "$HERE" 60 'xl destroy domu' || true

say "report"
node "$X/bench-report.mjs" report "$RUNS_FILE" "$OUT" "$RATE" "$BENCH/facts.json" "npm run bench:xen${ARGS:+ -- $ARGS}"
say "XEN-BENCH-DONE in $((SECONDS - T0)) s: $OUT.md"
