#!/usr/bin/env bash
# promtool and amtool for the unit tier (tests/unit/test_monitoring_rules.py: `promtool test rules`, config checks),
# taken out of Debian's prometheus and prometheus-alertmanager packages without installing them: no daemon starts,
# nothing listens. Kept in $WHISPER_TOOLS (default ~/.cache/whisper-platform/tools). Idempotent; a machine that
# has them on its PATH already gets nothing.
set -euo pipefail
dest=${WHISPER_TOOLS:-$HOME/.cache/whisper-platform/tools}
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$dest/$1" ]; }
need=()
have promtool || need+=(prometheus)
have amtool || need+=(prometheus-alertmanager)
[ ${#need[@]} -eq 0 ] && exit 0
echo "ensure-promtool: taking promtool/amtool out of ${need[*]} into $dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
chmod 755 "$tmp"   # apt's download sandbox user writes here
if ! apt-get download "${need[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get download "${need[@]}" >/dev/null
fi
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done
mkdir -p "$dest"
for tool in promtool amtool; do
  [ -x "root/usr/bin/$tool" ] && install -m 755 "root/usr/bin/$tool" "$dest/$tool"
done
"$dest/promtool" --version >/dev/null 2>&1 || have promtool
