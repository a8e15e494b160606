#!/bin/sh
# Installs xenroam for a Dom0 from this bundle: /opt/xenroam (its own runtime — Node.js in the xl bundle, Bun's
# glibc-2.17 build in the XAPI one; xenroam, the XAPI hook and the XAPI host plugin, each one JavaScript file)
# and /usr/local/sbin/xenroam. On an XAPI host, run `xenroam install-xapi` afterwards for the hooks and the
# plugin. Idempotent.
# Usage: sh install.sh [--root DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "install.sh: $root is not a directory" >&2; exit 2; }
dest="$root/opt/xenroam"
mkdir -p "$dest/bin" "$root/usr/local/sbin" "$root/etc/xenroam"
rt=node
[ -x "$here/bin/bun" ] && rt=bun
[ -x "$here/bin/$rt" ] || { echo "install.sh: this bundle has no bin/node or bin/bun" >&2; exit 2; }
cp "$here/bin/$rt" "$dest/bin/$rt.new" && mv "$dest/bin/$rt.new" "$dest/bin/$rt"
# One runtime at a time: a bundle of the other kind replaces it.
if [ "$rt" = bun ]; then rm -f "$dest/bin/node"; else rm -f "$dest/bin/bun"; fi
rm -rf "$dest/lib.new" && cp -R "$here/lib" "$dest/lib.new" && rm -rf "$dest/lib" && mv "$dest/lib.new" "$dest/lib"
cat > "$root/usr/local/sbin/xenroam" <<WRAP
#!/bin/sh
exec /opt/xenroam/bin/$rt /opt/xenroam/lib/xenroam/xenroam.mjs "\$@"
WRAP
chmod 755 "$dest/bin/$rt" "$root/usr/local/sbin/xenroam"
# Hooks installed before point at the runtime and files of then: rewrite them now, or XAPI would run a
# missing runtime (exit 127, which aborts a migration).
if [ -e "$root/etc/xapi.d/vm-pre-migrate/10-xenroam" ]; then
  "$dest/bin/$rt" "$dest/lib/xenroam/xenroam.mjs" install-xapi --root "$root" >/dev/null \
    || echo "install.sh: the XAPI hooks were not rewritten; run: xenroam install-xapi" >&2
fi
echo "installed xenroam in $dest; check this host with: xenroam doctor"
