#!/usr/bin/env bash
# Root-only tests against the real kernel. They run inside a fresh network namespace (unshare -n) so nothing
# they make can touch the host's own links, and every test cleans up the named namespaces it creates. A test
# file that crashes cannot run its teardown: afterwards, any lab a root test left behind (its state under
# /tmp/xr-*/) is taken down here, by its recorded PIDs, and the run fails saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
if (( EUID != 0 )); then
  echo "test:root needs root (network namespaces, bridges, radvd)." >&2
  exit 1
fi
marker=$(mktemp /tmp/xr-test-root.XXXXXX)
trap 'rm -f "$marker"' EXIT
rc=0
# The machine's own network namespace, for the few tests that download from Debian's archive (deb.root.test):
# this shell stays in it while the tests run, so they enter it by this path for a download and nothing else.
export XENROAM_TEST_ONLINE_NETNS=/proc/$$/ns/net
unshare --net -- bash -c 'ip link set lo up && exec npx ava --config ava.root.config.js "$@"' _ "$@" || rc=$?
left=0
for state in /tmp/xr-*/*/state.json; do
  [ -e "$state" ] && [ "$state" -nt "$marker" ] || continue
  lab=$(dirname "$state") root=$(dirname "$(dirname "$state")")
  echo "test:root: a test left lab $(basename "$lab") behind (state in $root); taking it down" >&2
  node packages/lab/dist/src/main.js down --force --name "$(basename "$lab")" --state-root "$root" >&2 || true
  rm -rf "$root"
  left=1
done
if (( rc == 0 && left == 1 )); then rc=1; fi
exit "$rc"
