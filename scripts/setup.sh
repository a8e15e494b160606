#!/usr/bin/env bash
# Sets up a Debian 12 machine for xenroam, idempotently: Debian packages, npm packages from the lockfile, the build.
set -euo pipefail
cd "$(dirname "$0")/.."

# network-manager, ifupdown, netplan.io (and systemd's networkd): the DomU network managers the agent lives
# beside, run against the lab's VM by test/lab/netmanagers.root.test.ts; none manages this machine.
# openssl: the lab makes its control server's CA and certificate with it at lab-up (packages/lab/src/openssl.ts),
# and the control server's TLS tests make theirs.
# etcd-server: /usr/bin/etcd, the control server's shared store; its tests start their own clusters on loopback.
DEBIAN_PACKAGES=(radvd nftables iproute2 iputils-ping procps util-linux systemd network-manager ifupdown netplan.io openssl etcd-server)
# rdnssd: the lab's guest resolver that takes RDNSS from RAs (test/lab/advertise.root.test.ts). Debian's
# package conflicts with network-manager, so its files are unpacked here instead of installed: one binary
# that links only the C library, run by that test from this directory.
RDNSSD_DIR=/var/cache/xenroam-lab/rdnssd

say() { printf 'setup: %s\n' "$*" >&2; }

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < 20 )); then
  say "Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none)). Install nodejs >= 20 and run again."
  exit 1
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  if (( EUID != 0 )); then
    say "missing Debian packages: ${missing[*]}. Run as root, or: sudo apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # radvd, NetworkManager and etcd are daemons xenroam and its lab start themselves, in namespaces: their packages must not
  # start them on this machine (Debian's policy-rc.d, placed only when the machine has none, removed after).
  policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
    printf '#!/bin/sh\n# xenroam setup: no daemon starts while its packages install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [[ -n $policy ]]; then
    rm -f "$policy"
    trap - EXIT INT TERM
  fi
  (( status == 0 )) || { say "apt-get install ${missing[*]} failed (exit $status)"; exit "$status"; }
  # NetworkManager likewise: enabled by its package, it would take this machine's own interfaces at boot.
  if [[ " ${missing[*]} " == *" network-manager "* ]]; then
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --quiet NetworkManager.service NetworkManager-wait-online.service \
        NetworkManager-dispatcher.service 2>/dev/null || true
    fi
    update-rc.d network-manager disable >/dev/null 2>&1 || true
  fi
  # etcd likewise: the tests and the lab start their own members on loopback; none runs at this machine's boot.
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --quiet etcd.service 2>/dev/null || true
    fi
    update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
fi

if [[ ! -x $RDNSSD_DIR/sbin/rdnssd ]]; then
  if (( EUID != 0 )); then
    say "rdnssd is not unpacked in $RDNSSD_DIR: run this as root"
    exit 1
  fi
  say "unpacking Debian's rdnssd into $RDNSSD_DIR (not installed: it conflicts with network-manager)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chown _apt "$work" 2>/dev/null || true # apt downloads as its own user where it can
  (cd "$work" && { apt-get download rdnssd >/dev/null 2>&1 || { apt-get update -qq && apt-get download rdnssd >/dev/null; }; })
  rm -rf "$RDNSSD_DIR" && mkdir -p "$RDNSSD_DIR" && dpkg-deb -x "$work"/rdnssd_*.deb "$RDNSSD_DIR"
  rm -rf "$work"
  trap - EXIT
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

say "building (tsc -b)"
npx tsc -b
# npm links a workspace's bin only once its target exists, i.e. after the build.
npm rebuild --ignore-scripts --loglevel=error >/dev/null
