#!/bin/bash
# The real-Xen test's Dom0 image, cached in XENROAM_XEN_CACHE (default /var/cache/xenroam-xen), after
# build-hypervisor.sh:
#   rootfs/        debootstrap'd bookworm minbase + xen-utils-4.17, radvd, nftables, openssh (kept: slow to make)
#   id_ed25519     the key the Dom0s accept from each other for `xl migrate` over ssh
#   dom0.cpio.gz   rootfs trimmed + kernel modules + xenroam's Dom0 bundle + scripts/xen/dom0/init, with the
#                  guest (domu.cpio.zst: busybox, xen-netfront, xenroam's DomU bundle) and its xl.cfg; with
#                  XENROAM_XEN_GUEST=debian the Debian guest's stage one and xl.cfg instead (its root:
#                  debian-guest.squashfs, see build-debian-guest.sh)
# Idempotent; pass --rebuild-dom0 after changing xenroam (the rootfs is kept).
set -euo pipefail
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "build-images: $*" >&2; }
cd "$CACHE"
[ -f xen-4.17-shadow ] || { say "run scripts/xen/build-hypervisor.sh first"; exit 1; }
KV=$(basename "$(ls -d ex/lib/modules/* | head -1)")

need=()
for p in debootstrap cpio busybox-static zstd; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x rootfs/usr/sbin/xl ]; then
  say "debootstrap bookworm minbase with the Xen tools (a few minutes; log: $CACHE/logs/debootstrap.log)"
  rm -rf rootfs
  debootstrap --variant=minbase \
    --include=xen-utils-4.17,iproute2,radvd,nftables,openssh-server,openssh-client,kmod,procps,socat \
    bookworm rootfs http://deb.debian.org/debian >logs/debootstrap.log 2>&1
fi
[ -f id_ed25519 ] || ssh-keygen -q -t ed25519 -N "" -C xenroam-test -f id_ed25519

if [ "${1:-}" = --rebuild-dom0 ] || [ ! -f dom0.cpio.gz ]; then
  say "assembling dom0.cpio.gz (kernel $KV, xenroam from $REPO)"
  rm -rf dom0root && cp -a rootfs dom0root
  rm -rf dom0root/usr/share/{doc,man,locale,info} dom0root/var/cache/apt/* dom0root/var/lib/apt/lists/*
  mkdir -p dom0root/lib/modules/"$KV"
  cp -a ex/lib/modules/"$KV"/{modules.order,modules.builtin,modules.builtin.modinfo} dom0root/lib/modules/"$KV"/
  # Only what a Dom0 of this test loads: the initramfs lives in RAM.
  for d in drivers/xen drivers/virtio drivers/block/xen-blkback net/bridge net/llc net/802 net/core net/ipv6 \
    net/netfilter lib/libcrc32c.ko crypto/crc32c_generic.ko drivers/net/xen-netback drivers/net/virtio_net.ko drivers/net/net_failover.ko \
    drivers/net/tun.ko drivers/net/veth.ko drivers/block/virtio_blk.ko; do
    [ -e "ex/lib/modules/$KV/kernel/$d" ] || continue
    mkdir -p "dom0root/lib/modules/$KV/kernel/$(dirname $d)"
    cp -a "ex/lib/modules/$KV/kernel/$d" "dom0root/lib/modules/$KV/kernel/$d"
  done
  rm -rf dom0root/usr/lib/python3* dom0root/var/lib/apt/* dom0root/usr/share/{perl,perl5}
  chroot dom0root /sbin/depmod "$KV"
  sed -i 's/^#\?autoballoon=.*/autoballoon="off"/' dom0root/etc/xen/xl.conf
  mkdir -p dom0root/root/.ssh && chmod 700 dom0root/root/.ssh
  cp id_ed25519 dom0root/root/.ssh/id_ed25519 && cp id_ed25519.pub dom0root/root/.ssh/authorized_keys
  printf 'StrictHostKeyChecking no\nUserKnownHostsFile /dev/null\nLogLevel ERROR\n' > dom0root/root/.ssh/config
  chroot dom0root ssh-keygen -A >/dev/null
  bundle=$(node "$REPO/scripts/package.mjs" host --out "$CACHE/pkg" 2>/dev/null)
  sh "$bundle/install.sh" --root dom0root >/dev/null
  install -m 644 "$REPO/scripts/xen/sites.json" dom0root/etc/xenroam/sites.json
  printf '2001:db8:a::a xa\n2001:db8:b::b xb\n' >> dom0root/etc/hosts
  # The guest: busybox, xen-netfront, the agent bundle with what its Bun links against (the C library only).
  say "assembling the guest's initramfs"
  rm -rf domuroot && mkdir -p domuroot/{bin,sbin,lib/modules,proc,sys,dev,tmp,run,etc}
  cp /bin/busybox domuroot/bin/busybox
  for a in $(domuroot/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "domuroot/bin/$a"; done
  cp "ex/lib/modules/$KV/kernel/drivers/net/xen-netfront.ko" domuroot/lib/modules/
  # nftables for the mobility layer's rewrite (notrack needs conntrack's module, not its tracking).
  for m in crypto/crc32c_generic lib/libcrc32c net/netfilter/nfnetlink net/netfilter/nf_tables net/ipv4/netfilter/nf_defrag_ipv4 \
    net/ipv6/netfilter/nf_defrag_ipv6 net/netfilter/nf_conntrack net/netfilter/nft_ct; do
    cp "ex/lib/modules/$KV/kernel/$m.ko" domuroot/lib/modules/
  done
  mkdir -p domuroot/usr/sbin && cp /usr/sbin/nft domuroot/usr/sbin/nft
  # iproute2's ip beside busybox's (/bin/ip): `bench:xen --trace` records the guest's link, address, route and
  # neighbour events with it (ip -ts monitor), which busybox's ip cannot.
  cp /usr/sbin/ip domuroot/usr/sbin/ip
  for lib in $({ ldd /usr/sbin/nft; ldd /usr/sbin/ip; } | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "domuroot$(dirname "$lib")" && cp -L "$lib" "domuroot$lib"
  done
  # XENROAM_XEN_AGENT_RUNTIME=node: the agent on Node.js (package.mjs --runtime node), to compare with Bun.
  agent=$(node "$REPO/scripts/package.mjs" agent --out "$CACHE/pkg" ${XENROAM_XEN_AGENT_RUNTIME:+--runtime "$XENROAM_XEN_AGENT_RUNTIME"} 2>/dev/null)
  sh "$agent/install.sh" --root domuroot >/dev/null
  rt=$agent/bin/bun
  [ -x "$rt" ] || rt=$agent/bin/node
  for lib in $(ldd "$rt" | grep -o '/[^ ]*'); do
    mkdir -p "domuroot$(dirname "$lib")" && cp -L "$lib" "domuroot$lib"
  done
  install -m 755 "$REPO/scripts/xen/domu/init" domuroot/init
  # The benchmark's VM->CN probe (scripts/xen/bench.sh boots the guest with rdinit=/bench-init xr.probe=HOST,PORT):
  # /bench-init is the guest's /init with the probe started just before its console shell.
  mkdir -p domuroot/xenroam-bench && install -m 644 "$REPO/scripts/xen/probe.mjs" domuroot/xenroam-bench/probe.mjs
  install -m 755 "$REPO/scripts/xen/domu/trace.sh" domuroot/xenroam-bench/trace.sh
  grep -q '^exec setsid' domuroot/init || { say "scripts/xen/domu/init no longer ends with 'exec setsid'"; exit 1; }
  sed '/^exec setsid/i\
for a in $(cat /proc/cmdline); do case $a in xr.probe=*) p=${a#xr.probe=} ;; esac; done\
[ -n "${p:-}" ] \&\& /opt/xenroam-agent/bin/'"$(basename "$rt")"' /xenroam-bench/probe.mjs send "${p%,*}" "${p#*,}" 20 </dev/null >/dev/hvc0 2>\&1 \&\
grep -qw xr.trace=1 /proc/cmdline \&\& sh /xenroam-bench/trace.sh start >/dev/hvc0 2>\&1' \
    domuroot/init > domuroot/bench-init
  chmod 755 domuroot/bench-init
  mkdir -p dom0root/xenroam-test
  # zstd, not gzip: xl's domain builder unpacks a gzip ramdisk into the guest's memory (111 MB here) before the
  # guest unpacks it again, so a gzip image needs ~70 MB more guest memory (304 MB against 232) to boot.
  (cd domuroot && find . | cpio -o -H newc --quiet | zstd -q -10 -T0) > dom0root/xenroam-test/domu.cpio.zst
  cp "ex/boot/vmlinuz-$KV" dom0root/xenroam-test/domu-vmlinuz
  install -m 644 "$REPO/scripts/xen/domu.cfg" dom0root/etc/xen/domu.cfg
  rm -rf domuroot
  # XENROAM_XEN_GUEST=debian (test:xen's default): the guest is Debian 12 with systemd instead
  # (build-debian-guest.sh; its disk reaches the hosts through boot-host.sh), and /etc/xen/domu.cfg is its.
  if [ "${XENROAM_XEN_GUEST:-busybox}" = debian ]; then
    bash "$REPO/scripts/xen/build-debian-guest.sh" "$agent" dom0root
    install -m 644 "$REPO/scripts/xen/domu-debian.cfg" dom0root/etc/xen/domu.cfg
  fi
  install -m 755 "$REPO/scripts/xen/dom0/init" dom0root/init
  (cd dom0root && find . | cpio -o -H newc --quiet | gzip -1) > dom0.cpio.gz.new && mv dom0.cpio.gz.new dom0.cpio.gz
  rm -rf dom0root
fi
say "ready: $CACHE/dom0.cpio.gz ($(du -h dom0.cpio.gz | cut -f1))"
