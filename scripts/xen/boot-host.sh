#!/bin/bash
# Boots one Xen host of the real-Xen test under QEMU (TCG: KVM does not run ordinary guests here) from the
# cache (XENROAM_XEN_CACHE): Xen 4.17 with shadow paging, Debian's kernel, the Dom0 initramfs.
# usage: boot-host.sh NAME ADDR/PLEN GATEWAY_LL [QEMU_NETDEV]
#   QEMU_NETDEV, e.g. tap,id=n0,ifname=xq-hosta,script=no,downscript=no (default: no network)
# Serial console: unix socket $RUN/NAME.sock (log $RUN/NAME.log), pid in $RUN/NAME.pid; RUN defaults to
# $XENROAM_XEN_CACHE/run. The host prints XENROAM-DOM0-READY when xl and sshd are up. XENROAM_XEN_HOST_MB: the
# emulated machine's memory (default 2048; Dom0 keeps 1408 MB of it, the rest is for guests).
# XENROAM_XEN_HOST_CPUS: the emulated machine's CPUs (default 2). With two or more, Dom0's one vCPU is pinned to
# pCPU 0 (dom0_vcpus_pin) and guests go on the others (their xl config says cpus = "all,^0"): Dom0 on a core of
# its own, as Xen's tuning advice for Dom0 has it and as production hosts run. With one, Dom0 and every guest
# share it through Xen's scheduler, and any CPU one takes at a resume delays the other's xenstore round trips.
set -euo pipefail
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
RUN=${RUN:-$CACHE/run}
NAME=${1:?usage: boot-host.sh NAME ADDR/PLEN GATEWAY_LL [QEMU_NETDEV]} ADDR=${2:?} GW=${3:?} NETDEV=${4:-}
KV=$(basename "$(ls -d "$CACHE"/ex/lib/modules/* | head -1)")
MAC=52:54:00:00:00:$(printf %02x $(( $(echo "$NAME" | cksum | cut -d' ' -f1) % 200 + 16 )))
mkdir -p "$RUN"; rm -f "$RUN/$NAME.sock" "$RUN/$NAME.log"
XEN_ARGS="console=com1 com1=115200,8n1 loglvl=warning guest_loglvl=warning dom0_mem=1408M,max:1408M dom0_max_vcpus=1 noreboot"
CPUS=${XENROAM_XEN_HOST_CPUS:-2}
[[ $CPUS =~ ^[1-8]$ ]] || { echo "XENROAM_XEN_HOST_CPUS must be 1 to 8, not $CPUS" >&2; exit 2; }
[ "$CPUS" -ge 2 ] && XEN_ARGS="$XEN_ARGS dom0_vcpus_pin"
# The Dom0 configures its address and route itself: no RA may race it (an RA that lands before init turns
# accept_ra off installs a default route identical to the static one, which then fails and the RA one expires).
DOM0_ARGS="console=hvc0 earlyprintk=xen sysctl.net.ipv6.conf.default.accept_ra=0 xr.host=$NAME xr.addr=$ADDR xr.gw=$GW"
NET=(-nic none)
[ -n "$NETDEV" ] && NET=(-netdev "$NETDEV" -device "virtio-net-pci,netdev=n0,mac=$MAC")
# XENROAM_XEN_GUEST_DISK: a file every host gets as the same read-only virtio disk (/dev/vda in its Dom0): the
# Debian guest's root, shared as a migration's storage must be.
DISK=()
if [ -n "${XENROAM_XEN_GUEST_DISK:-}" ]; then
  [ -f "$XENROAM_XEN_GUEST_DISK" ] || { echo "XENROAM_XEN_GUEST_DISK: no file $XENROAM_XEN_GUEST_DISK" >&2; exit 2; }
  DISK=(-drive "file=$XENROAM_XEN_GUEST_DISK,format=raw,readonly=on,if=virtio")
fi
# qemu64 (what Xen under TCG needs: not "max"), with the SSE4.2 and POPCNT of every x86-64 server since 2008:
# the guest agent's runtime, Bun's baseline build, needs them (it targets Nehalem), and QEMU's TCG provides them.
qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt -m "${XENROAM_XEN_HOST_MB:-2048}" -smp "$CPUS" -display none -no-reboot \
  -chardev "socket,id=s0,path=$RUN/$NAME.sock,server=on,wait=off,logfile=$RUN/$NAME.log" \
  -serial chardev:s0 -monitor none "${NET[@]}" "${DISK[@]}" \
  -kernel "$CACHE/xen-4.17-shadow" -append "$XEN_ARGS" \
  -initrd "$CACHE/ex/boot/vmlinuz-$KV $DOM0_ARGS,$CACHE/dom0.cpio.gz" \
  -pidfile "$RUN/$NAME.pid" -daemonize
echo "booting $NAME (pid $(cat "$RUN/$NAME.pid")); console $RUN/$NAME.sock"
