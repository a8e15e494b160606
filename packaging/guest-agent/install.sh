#!/bin/sh
# Installs the xenroam guest agent from this bundle: /opt/xenroam-agent (its own runtime, Bun's baseline build,
# and the agent as one JavaScript file), the systemd unit, /etc/default/xenroam-agent.
# Idempotent. Usage: sh install.sh [--root DIR] [--no-enable]
#   --root DIR    install into an image being built (no systemctl calls)
#   --no-enable   do not enable/start the service
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=/
enable=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --no-enable) enable=no; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "install.sh: $root is not a directory" >&2; exit 2; }
dest="$root/opt/xenroam-agent"
mkdir -p "$dest/bin" "$dest/lib" "$root/etc/systemd/system" "$root/etc/default"
# The bundle's bin/: its runtime (Bun, or Node.js in a --runtime node bundle) and the launcher
# (bin/xenroam-agent); the other runtime, which an earlier bundle may have left, goes.
for f in "$here"/bin/*; do
  n=$(basename "$f")
  cp "$f" "$dest/bin/$n.new" || { rm -f "$dest/bin/$n.new"; echo "install.sh: cannot copy $n (disk full?)" >&2; exit 1; }
  mv "$dest/bin/$n.new" "$dest/bin/$n" || exit 1
done
for r in bun node; do [ -e "$here/bin/$r" ] || rm -f "$dest/bin/$r"; done
rm -rf "$dest/lib.new" && cp -R "$here/lib" "$dest/lib.new" && rm -rf "$dest/lib" && mv "$dest/lib.new" "$dest/lib"
chmod 755 "$dest"/bin/*
cp "$here/xenroam-agent.service" "$root/etc/systemd/system/xenroam-agent.service"
if [ ! -e "$root/etc/default/xenroam-agent" ]; then
  cat > "$root/etc/default/xenroam-agent" <<'DEF'
# Options for xenroam-agent (xenroam-agent --help). xl hosts: --channel xl; XAPI pools: --channel xapi.
# With a home address: --hoa ADDR --vm NAME --control URL --token-file /etc/xenroam/vm.token --peer [CN]:7361
XENROAM_AGENT_OPTS="--channel xl"
DEF
fi
echo "installed xenroam-agent in $dest"
if [ "$root" = / ] && [ "$enable" = yes ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable --now xenroam-agent.service && echo "xenroam-agent.service enabled and started"
fi
