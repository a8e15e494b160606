#!/usr/bin/env bash
# Sets up a Debian 12 machine for xenroam, idempotently: Debian packages, npm packages from the lockfile, the build.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(radvd nftables iproute2 iputils-ping procps util-linux)

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
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

say "building (tsc -b)"
npx tsc -b
# npm links a workspace's bin only once its target exists, i.e. after the build.
npm rebuild --ignore-scripts --loglevel=error >/dev/null
