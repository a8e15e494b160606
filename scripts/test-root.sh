#!/usr/bin/env bash
# Root-only tests against the real kernel. They run inside a fresh network namespace (unshare -n) so nothing
# they make can touch the host's own links, and every test cleans up the named namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
if (( EUID != 0 )); then
  echo "test:root needs root (network namespaces, bridges, radvd)." >&2
  exit 1
fi
exec unshare --net -- bash -c 'ip link set lo up && exec npx ava --config ava.root.config.js "$@"' _ "$@"
