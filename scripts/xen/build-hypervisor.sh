#!/bin/bash
# The real-Xen test's first build step, cached in XENROAM_XEN_CACHE (default /var/cache/xenroam-xen):
#   ex/                 Debian's xen-hypervisor-4.17-amd64 and the current 6.1 kernel, unpacked
#   xen-4.17-shadow     the same Xen rebuilt from Debian's source with CONFIG_SHADOW_PAGING=y — Debian ships it
#                       without shadow paging, and PV live migration under QEMU/TCG needs it
# Idempotent: a step whose output exists is skipped. Needs root (apt-get) and Debian's package servers.
set -euo pipefail
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
mkdir -p "$CACHE"/{apt/lists/partial,debs,ex,src,logs}
cd "$CACHE"
say() { echo "build-hypervisor: $*" >&2; }

need=()
for p in build-essential bison flex python3 xz-utils dpkg-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# A private apt configuration with deb-src lines, so the machine's own sources stay as they are.
APT=(-o Dir::Etc::sourcelist="$CACHE/apt/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$CACHE/apt/lists")
if [ ! -s apt/sources.list ]; then
  printf 'deb-src http://deb.debian.org/debian %s main\n' bookworm bookworm-updates > apt/sources.list
  printf 'deb-src http://deb.debian.org/debian-security bookworm-security main\n' >> apt/sources.list
  apt-get "${APT[@]}" update -qq
fi

KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
if [ ! -f ex/boot/xen-4.17-amd64.config ] || ! ls ex/boot/vmlinuz-* >/dev/null 2>&1; then
  say "downloading xen-hypervisor-4.17-amd64 and $KPKG"
  (cd debs && apt-get download xen-hypervisor-4.17-amd64 "$KPKG" >/dev/null)
  for d in debs/*.deb; do dpkg-deb -x "$d" ex; done
fi

if [ ! -f xen-4.17-shadow ]; then
  # The newest xen source that is actually served (the newest one listed sometimes is not).
  for v in $(apt-cache "${APT[@]}" showsrc xen | sed -n 's/^Version: //p' | sort -rV); do
    (cd src && apt-get "${APT[@]}" source -qq --download-only "xen=$v" >/dev/null 2>&1) && { XV=$v; break; }
  done
  [ -n "${XV:-}" ] || { say "no xen source could be downloaded"; exit 1; }
  say "building Xen ${XV} with shadow paging (a few minutes; log: $CACHE/logs/xen-build.log)"
  rm -rf src/build && mkdir -p src/build
  dpkg-source -x "src/xen_${XV}.dsc" src/build/xen >/dev/null
  cp ex/boot/xen-4.17-amd64.config src/build/xen/xen/.config
  sed -i 's/^# CONFIG_SHADOW_PAGING is not set/CONFIG_SHADOW_PAGING=y/' src/build/xen/xen/.config
  make -C src/build/xen/xen olddefconfig PYTHON=/usr/bin/python3 >/dev/null
  grep -q '^CONFIG_SHADOW_PAGING=y' src/build/xen/xen/.config || { say "shadow paging did not stick"; exit 1; }
  time make -C src/build/xen/xen -j"$(nproc)" PYTHON=/usr/bin/python3 XEN_BUILD_DATE=xenroam >logs/xen-build.log 2>&1
  cp src/build/xen/xen/xen xen-4.17-shadow.new && mv xen-4.17-shadow.new xen-4.17-shadow
  rm -rf src/build
fi
say "ready: $CACHE/xen-4.17-shadow, kernel $(ls ex/boot/vmlinuz-* | head -1)"
