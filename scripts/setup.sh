#!/usr/bin/env bash
# Sets up a Debian 12 machine for xenroam, idempotently: Debian packages, npm packages from the lockfile, the build.
set -euo pipefail
cd "$(dirname "$0")/.."

# rdnssd: the lab's guest resolver that takes RDNSS from RAs (test/lab/advertise.root.test.ts).
DEBIAN_PACKAGES=(radvd nftables iproute2 iputils-ping procps util-linux rdnssd)

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
  # radvd and rdnssd are daemons xenroam and its lab start themselves, in namespaces: their packages must not
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
  # rdnssd is the lab guest's resolver only: installed here, it must not run on this machine at boot either
  # (its merge hook would rewrite /etc/resolv.conf).
  if [[ " ${missing[*]} " == *" rdnssd "* ]]; then
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then systemctl disable --quiet rdnssd.service 2>/dev/null || true; fi
    update-rc.d rdnssd disable >/dev/null 2>&1 || true
  fi
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

say "building (tsc -b)"
npx tsc -b
# npm links a workspace's bin only once its target exists, i.e. after the build.
npm rebuild --ignore-scripts --loglevel=error >/dev/null
