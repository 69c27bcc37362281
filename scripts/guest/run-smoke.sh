#!/usr/bin/env bash
# Starts a tgt library (scripts/tgt-vtl.sh), runs scripts/guest/sgio-smoke.sh inside the QEMU guest
# (scripts/qemu-sgio.sh) against its drive (LUN 1) and changer (LUN 3), stops tgt. Needs root.
#   scripts/guest/run-smoke.sh [LOGFILE] [extra qemu-sgio.sh args...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log=${1:-${TMPDIR:-/tmp}/rackvault-sgio-smoke.log}
shift || true
dir=$(mktemp -d "${TMPDIR:-/tmp}/rackvault-smoke.XXXXXX")
port=$((3500 + $$ % 400))
cleanup() { "$here/tgt-vtl.sh" stop "$dir/vtl" || true; rm -rf "$dir"; }
trap cleanup EXIT
url=$("$here/tgt-vtl.sh" start "$dir/vtl" "$port")
rc=0
"$here/qemu-sgio.sh" --iscsi-url "$url" --luns 1,3 --script "$here/guest/sgio-smoke.sh" --out "$log" "$@" || rc=$?
echo "run-smoke.sh: guest exit code $rc (log: $log)" >&2
exit $rc
