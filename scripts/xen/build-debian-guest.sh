#!/bin/bash
# The real-Xen test's Debian guest (issue 11): Debian 12 booting systemd, its interfaces managed by
# systemd-networkd, xenroam-agent installed by its own install.sh (which writes networkd's drop-ins) and
# started by its unit. Called by build-images.sh with the agent bundle's directory and the place to put the
# guest's boot files; the root filesystem goes to $CACHE/debian-guest.squashfs, which boot-host.sh gives both
# hosts as one read-only virtio disk (so both Dom0s have the guest's disk at /dev/vda, as shared storage
# would, and `xl migrate` needs no copy of it). The guest's stage one (busybox) mounts it read-only under a
# tmpfs overlay and hands over to systemd: what a live or diskless image does; every write stays in memory.
#   usage: build-debian-guest.sh AGENT_BUNDLE_DIR DOM0_ROOT
# Cached: guestfs/ (debootstrap'd once). Rebuilt each time: the squashfs and the stage one.
set -euo pipefail
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=${1:?usage: build-debian-guest.sh AGENT_BUNDLE_DIR DOM0_ROOT} DOM0ROOT=${2:?}
say() { echo "build-debian-guest: $*" >&2; }
cd "$CACHE"
KV=$(basename "$(ls -d ex/lib/modules/* | head -1)")
M=ex/lib/modules/$KV/kernel
# The second vif, xenroam's (scripts/xen/domu-debian.cfg): network-setup leaves it to the agent.
XENROAM_VIF_MAC=00:16:3e:00:00:11

command -v mksquashfs >/dev/null || {
  say "installing squashfs-tools"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends squashfs-tools >/dev/null
}

if [ ! -x guestfs/lib/systemd/systemd-networkd ]; then
  say "debootstrap bookworm minbase with systemd (a few minutes; log: $CACHE/logs/debootstrap-guest.log)"
  rm -rf guestfs
  debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,iproute2,nftables,kmod,procps,iputils-ping \
    bookworm guestfs http://deb.debian.org/debian >logs/debootstrap-guest.log 2>&1
fi

say "assembling the guest's root (systemd-networkd, xenroam-agent from $AGENT)"
rm -rf guestimg && cp -a guestfs guestimg
rm -rf guestimg/usr/share/{doc,man,locale,info} guestimg/var/cache/apt/* guestimg/var/lib/apt/lists/*
# The kernel's modules the guest loads (udev does, by modalias): its vifs and disk, nftables for the mobility
# layer (notrack needs conntrack's module), overlayfs and squashfs.
mkdir -p "guestimg/lib/modules/$KV"
cp -a "ex/lib/modules/$KV"/{modules.order,modules.builtin,modules.builtin.modinfo} "guestimg/lib/modules/$KV/"
for d in drivers/net/xen-netfront.ko drivers/block/xen-blkfront.ko fs/overlayfs fs/squashfs net/netfilter net/ipv4/netfilter \
  net/ipv6/netfilter lib/libcrc32c.ko crypto/crc32c_generic.ko; do
  mkdir -p "guestimg/lib/modules/$KV/kernel/$(dirname "$d")"
  cp -a "$M/$d" "guestimg/lib/modules/$KV/kernel/$d"
done
chroot guestimg /sbin/depmod "$KV"
echo domu > guestimg/etc/hostname
printf '127.0.0.1 localhost\n::1 localhost\n' > guestimg/etc/hosts
: > guestimg/etc/machine-id # systemd makes one at boot (in the overlay)
# Nothing the test does not need runs at boot (a TCG guest is slow): no timers, no getty on a missing tty.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service \
  getty@tty1.service systemd-networkd-wait-online.service; do
  ln -sf /dev/null "guestimg/etc/systemd/system/$u"
done
# The guest's network as a Debian image with systemd-networkd has it: every ethernet link by RAs.
mkdir -p guestimg/etc/systemd/network
cat > guestimg/etc/systemd/network/50-ether.network <<'EOF'
[Match]
Type=ether

[Network]
IPv6AcceptRA=yes
LinkLocalAddressing=ipv6
EOF
chroot guestimg systemctl enable systemd-networkd.service >/dev/null 2>&1
# xenroam-agent, as an admin installs it into an image: its install.sh, told the xenroam vif's MAC, writes
# networkd's drop-ins (network-setup); the unit is enabled as the Debian package would.
sh "$AGENT/install.sh" --root guestimg --mac "$XENROAM_VIF_MAC" >&2
grep -q "Unmanaged=yes" guestimg/etc/systemd/network/05-xenroam-agent.network ||
  { say "install.sh did not write networkd's drop-in"; exit 1; }
chroot guestimg systemctl enable xenroam-agent.service >/dev/null 2>&1
# The test's part: the agent's mobility options from the kernel command line (xr.*, as the busybox guest takes
# them), and its log on the console, where the test and the Dom0s' console logs read it.
install -m 755 "$REPO/scripts/xen/domu-debian/xenroam-test-options" guestimg/usr/local/sbin/xenroam-test-options
cat > guestimg/etc/systemd/system/xenroam-test-options.service <<'EOF'
[Unit]
Description=xenroam test: the agent's options from the kernel command line
DefaultDependencies=no
Before=xenroam-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/xenroam-test-options
EOF
mkdir -p guestimg/etc/systemd/system/xenroam-agent.service.d
cat > guestimg/etc/systemd/system/xenroam-agent.service.d/xenroam-test.conf <<'EOF'
[Unit]
Wants=xenroam-test-options.service
After=xenroam-test-options.service

[Service]
EnvironmentFile=-/run/xenroam-test/agent.env
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/hvc0
TTYReset=no
TTYVHangup=no
EOF
rm -f debian-guest.squashfs.new
mksquashfs guestimg debian-guest.squashfs.new -comp zstd -no-xattrs -noappend -quiet >/dev/null
mv debian-guest.squashfs.new debian-guest.squashfs
rm -rf guestimg

# Stage one: busybox, the modules to reach the disk, and its /init.
rm -rf stage1 && mkdir -p stage1/{bin,lib/modules,proc,sys,dev,lower,upper,newroot}
cp /bin/busybox stage1/bin/busybox
for a in sh mount umount mkdir insmod switch_root sleep cat echo; do ln -sf busybox "stage1/bin/$a"; done
for k in drivers/block/xen-blkfront.ko fs/squashfs/squashfs.ko fs/overlayfs/overlay.ko; do cp "$M/$k" stage1/lib/modules/; done
install -m 755 "$REPO/scripts/xen/domu-debian/init" stage1/init
mkdir -p "$DOM0ROOT/xenroam-test"
(cd stage1 && find . | cpio -o -H newc --quiet | zstd -q -10 -T0) > "$DOM0ROOT/xenroam-test/domu-debian-initrd.cpio.zst"
rm -rf stage1
say "ready: $CACHE/debian-guest.squashfs ($(du -h debian-guest.squashfs | cut -f1)), stage one in the Dom0 image"
