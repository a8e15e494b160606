#!/bin/sh
# Installs the xenroam guest agent from this bundle: /opt/xenroam-agent (its own runtime, Bun's baseline build,
# and the agent as one JavaScript file), the systemd unit, /etc/default/xenroam-agent; then has the DomU's
# network manager leave the VM's xenroam vif to the agent (xenroam-agent network-setup).
# Idempotent. Usage: sh install.sh [--root DIR] [--mac MAC] [--no-enable] [--uninstall]
#   --root DIR    install into an image being built (no systemctl calls)
#   --mac MAC     the VM's xenroam vif (default in a running DomU: the second of its two vifs; needed with --root)
#   --no-enable   do not enable/start the service
#   --uninstall   stop and remove everything install.sh put there, the network managers' drop-ins too
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=/
enable=yes
mac=
uninstall=no
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --mac) mac=${2:?--mac needs a MAC}; shift 2 ;;
    --no-enable) enable=no; shift ;;
    --uninstall) uninstall=yes; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "install.sh: $root is not a directory" >&2; exit 2; }
root=$(cd "$root" && pwd)
dest="$root/opt/xenroam-agent"
live() { [ "$root" = / ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }
setup() { # network-setup with this root; its own runtime from the bundle, which runs on the build host too
  if [ "$root" = / ]; then "$here/bin/xenroam-agent" network-setup "$@"
  else "$here/bin/xenroam-agent" network-setup --root "$root" "$@"; fi
}

if [ "$uninstall" = yes ]; then
  if live; then systemctl disable --now xenroam-agent.service 2>/dev/null || true; fi
  setup --remove || echo "install.sh: could not remove the network managers' drop-ins (above)" >&2
  rm -rf "$dest" "$root/etc/systemd/system/xenroam-agent.service" "$root/etc/default/xenroam-agent" \
    "$root/etc/systemd/system/multi-user.target.wants/xenroam-agent.service"
  if live; then systemctl daemon-reload; fi
  echo "removed xenroam-agent from $root"
  exit 0
fi

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
# (an https:// URL with a private CA: --control-ca /etc/xenroam/control-ca.pem)
XENROAM_AGENT_OPTS="--channel xl"
DEF
fi
echo "installed xenroam-agent in $dest"
# The network manager: it must leave the xenroam vif to the agent (the agent refuses to start otherwise).
if [ "$root" != / ] && [ -z "$mac" ]; then
  echo "install.sh: not run: xenroam-agent network-setup --root $root --mac MAC (the image has no vifs to look at; pass --mac)"
elif ! setup ${mac:+--mac "$mac"}; then
  echo "install.sh: the network manager is not set up for xenroam (above); the agent refuses to start until it is" >&2
fi
if live && [ "$enable" = yes ]; then
  systemctl daemon-reload
  systemctl enable --now xenroam-agent.service && echo "xenroam-agent.service enabled and started"
fi
