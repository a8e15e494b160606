#!/usr/bin/env bash
# The one test command (README, .ci/run): setup, lint, unit tests, then the root-only lab tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if (( EUID != 0 )); then
  echo "npm test runs the privileged lab tests and must run as root; 'npm run test:unit' runs the unprivileged part." >&2
  exit 1
fi

bash scripts/setup.sh
npm run lint --silent

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
npx ava --config ava.config.js 2>&1 | tee -a "$log" || status=1
bash scripts/test-root.sh 2>&1 | tee -a "$log" || status=1

count() { grep -Eo "^ *[0-9]+ tests? $1" "$log" | awk '{s+=$1} END {print s+0}'; }
echo "$(count passed) passed, $(count failed) failed"
exit "$status"
