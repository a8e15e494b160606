#!/bin/bash
# npm run test:xen — xenroam on real Xen (opt-in; not part of npm test). Two Xen 4.17 hosts under QEMU/TCG on
# two IPv6 subnets (a router and a correspondent made of namespaces), xenroam's Dom0 bundle in both Dom0s,
# a PV guest with two vifs and xenroam's agent with a home address (xenroam-control on the router, the
# correspondent agent on the CN): the xl adapter migrates it A -> B with the method and back, and after each
# move the correspondent reaches the guest at its home address. Prints a timeline. Cleans up everything it
# starts (XENROAM_XEN_KEEP=1: not after a failure, for a look).
set -euo pipefail
X=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$X/../.." && pwd)
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
RUN=${RUN:-$CACHE/run}
export XENROAM_XEN_CACHE=$CACHE RUN
T0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() { FAILED=1; say "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (namespaces, taps, QEMU)"
# One rig run at a time (bench.sh takes the same lock): the namespaces, taps and cache are shared.
mkdir -p "$CACHE" && exec 9>>"$CACHE/rig.lock"
flock -n 9 || fail "another real-Xen run (test:xen or bench:xen) holds $CACHE/rig.lock"
for c in qemu-system-x86_64 socat radvd ssh; do
  command -v $c >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 socat radvd openssh-client >/dev/null; break; }
done

# The guest: Debian 12 booting systemd, systemd-networkd managing its interfaces, the agent installed by its
# install.sh and started by its unit (scripts/xen/build-debian-guest.sh); XENROAM_XEN_GUEST=busybox: the
# busybox initramfs guest that bench:xen uses.
export XENROAM_XEN_GUEST=${XENROAM_XEN_GUEST:-debian}
case $XENROAM_XEN_GUEST in
debian) export XENROAM_XEN_GUEST_DISK=$CACHE/debian-guest.squashfs ;;
busybox) unset XENROAM_XEN_GUEST_DISK ;;
*) fail "XENROAM_XEN_GUEST is debian or busybox, not $XENROAM_XEN_GUEST" ;;
esac
say "building (cached in $CACHE; the guest: $XENROAM_XEN_GUEST)"
bash "$X/build-hypervisor.sh"
bash "$X/build-images.sh" --rebuild-dom0

cleanup() {
  if [ "${XENROAM_XEN_KEEP:-}" = 1 ] && [ -n "${FAILED:-}" ]; then
    say "XENROAM_XEN_KEEP=1: left running for a look (ssh from the router namespace, see README); to tear down:"
    say "  kill \$(cat $RUN/xa.pid) \$(cat $RUN/xb.pid); bash $X/net.sh down"
    return
  fi
  for h in xa xb; do [ -f "$RUN/$h.pid" ] && kill "$(cat "$RUN/$h.pid")" 2>/dev/null; rm -f "$RUN/$h.pid"; done
  bash "$X/net.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
bash "$X/net.sh" up >/dev/null
rm -f "$RUN"/x?.log

# The mobility layer: the control server on the router (its lan-c address), the correspondent agent on the CN.
HOA=2001:db8:f::5
CONTROL="http://[2001:db8:c::1]:7360"
rm -f "$RUN"/control.* "$RUN"/*.token
ctl() { node "$REPO/packages/control/dist/src/main.js" "$@"; }
ctl init --key "$RUN/control.key" --admin-token-file "$RUN/admin.token" >/dev/null
ip netns exec xrx-router node "$REPO/packages/control/dist/src/main.js" serve --listen "[2001:db8:c::1]:7360" \
  --database "$RUN/control.db" --key "$RUN/control.key" --admin-token-file "$RUN/admin.token" 2>"$RUN/control.log" &
admin() { ip netns exec xrx-router node "$REPO/packages/control/dist/src/main.js" "$@" --server "$CONTROL" --token-file "$RUN/admin.token"; }
for i in $(seq 50); do admin put-sites "$X/sites.json" >/dev/null 2>&1 && break; sleep 0.2; done
VM_TOKEN=$(admin add-vm domu --hoa $HOA --mac 00:16:3e:00:00:10 --mac 00:16:3e:00:00:11 | sed -n 's/.*"token": "\(.*\)".*/\1/p')
admin add-peer cn | sed -n 's/.*"token": "\(.*\)".*/\1/p' > "$RUN/cn.token"
# Each Dom0's own token (a peer named after the host): xenroam relays the guest's activation with it.
for h in xa xb; do admin add-peer $h | sed -n 's/.*"token": "\(.*\)".*/\1/p' > "$RUN/$h.token"; done
[ -n "$VM_TOKEN" ] && [ -s "$RUN/cn.token" ] || fail "the control server did not register the guest and the CN"
ip netns exec xrx-cn node "$REPO/guest-agent/dist/src/main.js" --correspondent --control "$CONTROL" \
  --token-file "$RUN/cn.token" --public-key "$RUN/control.key.pub" --listen "[2001:db8:c::100]:7361" \
  >"$RUN/correspondent.log" 2>&1 &
say "control server on the router, correspondent agent on the CN; the guest's home address is $HOA"
for h in "xa 2001:db8:a::a/64 fe80::a:1 lan-a" "xb 2001:db8:b::b/64 fe80::b:1 lan-b"; do
  set -- $h
  ip netns exec xrx-router bash "$X/boot-host.sh" "$1" "$2" "$3" "tap,id=n0,ifname=xq-$1,script=no,downscript=no" >/dev/null
  ip netns exec xrx-router ip link set "xq-$1" master "$4" up
done
say "booting two Xen hosts under QEMU (TCG)"
for i in $(seq 100); do
  [ "$(grep -al XENROAM-DOM0-READY "$RUN"/x?.log 2>/dev/null | wc -l)" = 2 ] && break
  grep -aq "Kernel panic" "$RUN"/x?.log 2>/dev/null && fail "a Dom0 panicked (see $RUN/*.log)"
  sleep 3
done
[ "$(grep -al XENROAM-DOM0-READY "$RUN"/x?.log | wc -l)" = 2 ] || fail "the hosts did not boot"
say "both Dom0s up"

# A command in a Dom0 over ssh from the router (the key the Dom0s share for xl migrate); never fails (callers
# check the output). scripts/xen/console.sh reaches a Dom0 through its serial console instead, for when ssh is not up.
declare -A DOM0_ADDR=([xa]=2001:db8:a::a [xb]=2001:db8:b::b)
dom0() { # host timeout_s command...
  local h=$1 t=$2; shift 2
  timeout "$t" ip netns exec xrx-router ssh -i "$CACHE/id_ed25519" -o BatchMode=yes -o ConnectTimeout=20 \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@${DOM0_ADDR[$h]}" "$*" || true
}
# The guest's console as xenconsoled kept it on HOST (what the agent logged since the guest last started there).
guest_console() {
  say "the guest's console on $1 (its last lines):"
  timeout 20 ip netns exec xrx-router ssh -tt -i "$CACHE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@${DOM0_ADDR[$1]}" \
    'xl list domu >/dev/null 2>&1 || { echo "(domu is not on this host)"; exit; }; timeout 3 xl console domu' </dev/null 2>&1 |
    tr -d '\r' | grep -av '^ *$' | tail -30 | cut -c1-400 || true
}
# The agent's events since the guest arrived on HOST, one line each: event and the fields that tell the story.
guest_events() {
  timeout 20 ip netns exec xrx-router ssh -tt -i "$CACHE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@${DOM0_ADDR[$1]}" 'timeout 3 xl console domu' </dev/null 2>&1 |
    tr -d '\r' | grep -a '"component":"xenroam-agent"' | sed 's/^.*"ts":"[^T]*T\([^"]*\)Z","component":"xenroam-agent",/  \1 /' |
    cut -c1-200 || true
}
cn_ping() { ip netns exec xrx-cn ping -c 1 -W 2 "$1" >/dev/null 2>&1; }
wait_ping() {
  for i in $(seq "$2"); do cn_ping "$1" && return 0; sleep 2; done
  return 1
}
ADDR_A=2001:db8:a:0:216:3eff:fe00:10 # the primary vif's SLAAC address on site a
ADDR_B=2001:db8:b:0:216:3eff:fe00:11 # the secondary's on site b: the MoA

# The guest's agent gets its mobility options on its kernel command line.
EXTRA="console=hvc0 quiet xr.hoa=$HOA xr.vm=domu xr.control=$CONTROL xr.token=$VM_TOKEN xr.peer=[2001:db8:c::100]:7361"
# With a pCPU besides Dom0's (boot-host.sh pins Dom0 to pCPU 0), the guest goes there.
PIN=
[ "${XENROAM_XEN_HOST_CPUS:-2}" -ge 2 ] && PIN="grep -q '^cpus' /etc/xen/domu.cfg || echo 'cpus = \"all,^0\"' >> /etc/xen/domu.cfg;"
dom0 xa 60 "$PIN sed -i 's|^extra = .*|extra = \"$EXTRA\"|' /etc/xen/domu.cfg; grep -c xr.hoa /etc/xen/domu.cfg" |
  grep -q '^1$' || fail "could not give the guest its options (ssh root@${DOM0_ADDR[xa]})"
dom0 xa 120 'xl create /etc/xen/domu.cfg >/dev/null 2>&1; xl list domu | tail -1'
# With the mobility layer every address of the guest answers as its HoA, so the CN checks the HoA only.
wait_ping $HOA 150 || { tail -5 "$RUN/correspondent.log"; fail "the guest never answered at its home address $HOA"; }
dom0 xa 120 'd=$(xl domid domu); for i in $(seq 60); do xenstore-exists /local/domain/$d/data/xenroam && break; sleep 1; done; xenstore-exists /local/domain/$d/data/xenroam && echo agent-connected' |
  grep -q agent-connected || fail "the guest agent did not connect to xenstore"
say "guest up on xa (locator $ADDR_A), agent connected; the correspondent reaches its home address $HOA"
for h in xa xb; do
  dom0 $h 30 "mkdir -p /etc/xenroam && umask 077 && printf %s $(cat "$RUN/$h.token") > /etc/xenroam/host.token && echo ok" |
    grep -q ok || fail "could not give $h its control token"
done

# Step 1 alone first (its own timeline line), then the migration that reuses it. Under TCG the guest is slow
# (an nft run takes seconds), so it gets 60 s to prepare instead of the default 8.
migrate() { # from to expected-address
  say "xenroam prepare domu --to $2 (on $1)"
  out=$(dom0 "$1" 120 "xenroam --host $1 --control '$CONTROL' prepare domu --to $2 --timeout 60000 2>&1")
  printf '%s\n' "$out" | grep -a 'prepared for site\|error' | sed 's/^/  /'
  if ! printf '%s\n' "$out" | grep -q "prepared for site .*MoA $3"; then
    printf '%s\n' "$out" | tail -20
    guest_console "$1"
    fail "the guest did not prepare for $2 (its MoA should be $3)"
  fi
  say "xenroam migrate domu $2 (on $1); the CN pings the home address every 0.2 s meanwhile"
  ip netns exec xrx-cn ping -D -n -i 0.2 -W 1 $HOA >"$RUN/ping-$2.log" 2>&1 &
  local pinger=$!
  out=$(dom0 "$1" 900 "xenroam --host $1 --control '$CONTROL' migrate domu $2 2>&1")
  printf '%s\n' "$out" | sed -n '/^migration /,$p' | sed 's/^/  /'
  if ! printf '%s\n' "$out" | grep -q "dual-interface"; then
    printf '%s\n' "$out" | tail -20
    guest_console "$1"; guest_console "$2"
    fail "the migration did not use the method"
  fi
  printf '%s\n' "$out" | grep -q "MoA $3" || fail "the guest's new locator is not $3"
  # The relay (host-plugin/src/adapters/suspend-watch.ts): the source saw libxl suspend the guest and relayed its
  # activation then, during the stop-and-copy round.
  if ! printf '%s\n' "$out" | grep -q ' suspended$' || ! printf '%s\n' "$out" | grep -q ' binding-relayed$'; then
    printf '%s\n' "$out" | grep -a '^xenroam' | tail -30 | cut -c1-300
    guest_events "$2"
    fail "the source did not relay the guest's activation at libxl's suspend (no 'suspended' and 'binding-relayed' in the timeline)"
  fi
  if ! wait_ping $HOA 30; then
    kill $pinger 2>/dev/null || true
    tail -5 "$RUN/correspondent.log"
    guest_console "$2"
    fail "the correspondent lost the home address after the move to $2"
  fi
  sleep 1; kill $pinger 2>/dev/null || true; wait $pinger 2>/dev/null || true
  # The longest silence between two echo replies: the HoA's outage as the CN saw it (TCG: slow, not a benchmark).
  awk -F'[][]' '/bytes from/ { t = $2 + 0; if (last && t - last > gap) gap = t - last; last = t }
    END { printf "  CN -> HoA: longest gap between echo replies %.1f s\n", gap }' "$RUN/ping-$2.log"
  # The carrier hold (host-plugin/src/hold.ts): xenroam receive kept the old primary's frontend from connecting
  # until the guest reported its switch; the detached releaser logs how long.
  for i in $(seq 15); do
    hold=$(dom0 "$2" 30 'tail -n 3 /run/xenroam/hold-release.log 2>/dev/null' | grep -a '"event":"hold_released"' | tail -1 || true)
    [ -n "$hold" ] && break; sleep 1
  done
  if ! printf '%s\n' "$hold" | grep -q '"why":"switched"'; then
    dom0 "$2" 30 'ls -l /run/xenroam; cat /run/xenroam/hold-release.log' | sed 's/^/  /'
    fail "on $2 the old primary's frontend was not held until the guest switched (hold-release.log: ${hold:-nothing})"
  fi
  say "carrier hold on $2: the old primary's frontend connected only after the guest's switch ($(printf '%s' "$hold" | grep -o '"heldMs":[0-9]*'))"
  say "the guest agent's switch on $2 (from its console):"
  guest_events "$2"
  # Its memory (issue 11: at most 40 MB idle and at the peak), from the consoles the Dom0s keep: idle when it
  # started (on xa, where it booted), now, and the most it ever had (the kernel's high-water mark).
  local idle now
  idle=$(dom0 xa 30 'cat /var/log/xen/console/guest-*.log 2>/dev/null' | grep -a '"event":"started"' | tail -1 | grep -o '"rssMb":[0-9.]*' | cut -d: -f2 || true)
  now=$(dom0 "$2" 30 'cat /var/log/xen/console/guest-*.log 2>/dev/null' | grep -a '"event":"switched"' | tail -1 | grep -o '"rssMb":[0-9.]*,"maxRssMb":[0-9.]*' |
    sed 's/"rssMb":\([0-9.]*\),"maxRssMb":\([0-9.]*\)/\1 MB, and at most \2 MB since it started/' || true)
  say "the guest agent's resident memory: ${idle:-?} MB idle at its start; after the switch ${now:-not reported}"
  # binding_accepted: the guest's datagram; binding_learned: the control server's watch stream.
  grep -a 'binding_accepted\|binding_learned' "$RUN/correspondent.log" | tail -1 |
    sed 's/.*"event":"\([a-z_]*\)".*"locator":"\([^"]*\)","seq":\([0-9]*\).*/  the correspondent: \1 seq \3 -> \2/'
  say "the guest runs on $2 with locator $3; the correspondent reaches it at its home address $HOA"
}
migrate xa xb $ADDR_B
dom0 xb 60 'xl list -l domu | grep -o "\"bridge\": \"[a-z0-9]*\""' | tr '\n' ' ' | grep -q 'xrpark0.*xenbr0' ||
  fail "the vifs did not come up swapped on xb"
say "on xb the vifs are swapped: vif.0 on xrpark0, vif.1 on xenbr0"
migrate xb xa $ADDR_A

# Evacuation (issue 13): `xenroam evacuate` empties xa to site b through the xl adapter's `xl list` (Domain-0
# left out), with the method; here the one guest. It prints progress per VM and the summary table.
say "xenroam evacuate xa --to b (on xa): every guest of xa, with the method; the CN pings the home address meanwhile"
ip netns exec xrx-cn ping -D -n -i 0.2 -W 1 $HOA >"$RUN/ping-evacuate.log" 2>&1 &
pinger=$!
out=$(dom0 xa 900 "xenroam --host xa --control '$CONTROL' evacuate xa --to b --timeout 60000 2>&1; echo exit=\$?")
printf '%s\n' "$out" | grep -aE '^(VM |domu |xa -> site|exit=)' | sed 's/^/  /' | cut -c1-200
printf '%s\n' "$out" | grep -q 'exit=0' || { printf '%s\n' "$out" | tail -20; fail "xenroam evacuate xa did not end with exit 0"; }
printf '%s\n' "$out" | grep -qaE '^domu +xb +method ' || fail "the evacuation did not move domu to xb with the method"
dom0 xb 60 'xl list domu >/dev/null 2>&1 && echo on-xb' | grep -q on-xb || fail "after the evacuation domu is not on xb"
left=$(dom0 xa 60 'xl list | tail -n +2 | awk "{print \$1}"')
[ "$left" = Domain-0 ] || fail "xa runs other than Domain-0 after its evacuation (xl list: ${left:-no answer})"
wait_ping $HOA 30 || fail "the correspondent lost the home address after the evacuation"
sleep 1; kill $pinger 2>/dev/null || true; wait $pinger 2>/dev/null || true
awk -F'[][]' '/bytes from/ { t = $2 + 0; if (last && t - last > gap) gap = t - last; last = t }
  END { printf "  CN -> HoA: longest gap between echo replies %.1f s\n", gap }' "$RUN/ping-evacuate.log"
say "xa is empty: domu runs on xb, reached at its home address $HOA"
say "XEN-TEST-OK in $((SECONDS - T0)) s"
