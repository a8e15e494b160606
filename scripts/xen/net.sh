#!/bin/bash
# The real-Xen test's network, from namespaces: a router with one LAN per site (lan-a 2001:db8:a::/64,
# lan-b 2001:db8:b::/64: each gateway's link-local and MAC as in scripts/xen/sites.json, radvd advertising
# the prefix) and a correspondent on lan-c (2001:db8:c::100). QEMU hosts join a LAN through a tap in the
# router namespace (boot-host.sh runs inside it).   usage: net.sh up|down
set -euo pipefail
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
RUN=${RUN:-$CACHE/run}
R=xrx-router C=xrx-cn
nsx() { ip netns exec "$@"; }
case "${1:-}" in
up)
  mkdir -p "$RUN"
  ip netns add $R; ip netns add $C
  nsx $R sysctl -qw net.ipv6.conf.all.forwarding=1
  nsx $R ip link set lo up
  for s in a b c; do
    nsx $R ip link add lan-$s address 02:00:00:00:0$s:01 type bridge
    nsx $R sysctl -qw net.ipv6.conf.lan-$s.addr_gen_mode=1
    nsx $R ip link set lan-$s up
    nsx $R ip -6 addr add fe80::$s:1/64 dev lan-$s nodad
    nsx $R ip -6 addr add 2001:db8:$s::1/64 dev lan-$s nodad
  done
  ip link add p-cn netns $R type veth peer name eth0 netns $C
  nsx $R ip link set p-cn master lan-c up
  nsx $C ip link set lo up; nsx $C ip link set eth0 up
  nsx $C ip -6 addr add 2001:db8:c::100/64 dev eth0 nodad
  nsx $C ip -6 route add default via fe80::c:1 dev eth0
  cat > "$RUN/radvd.conf" <<CONF
interface lan-a { AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 4; prefix 2001:db8:a::/64 {}; };
interface lan-b { AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 4; prefix 2001:db8:b::/64 {}; };
CONF
  nsx $R radvd -C "$RUN/radvd.conf" -p "$RUN/radvd.pid" -m logfile -l "$RUN/radvd.log"
  echo "network up: $R (lan-a, lan-b, lan-c), $C 2001:db8:c::100"
  ;;
down)
  [ -f "$RUN/radvd.pid" ] && kill "$(cat "$RUN/radvd.pid")" 2>/dev/null || true
  for ns in $R $C; do
    for pid in $(ip netns pids $ns 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -f "$RUN/radvd.pid"
  echo "network down"
  ;;
*) echo "usage: net.sh up|down" >&2; exit 2 ;;
esac
