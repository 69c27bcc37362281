#!/usr/bin/env bash
# tape-bench.sh: sequential write and read of BENCH_MB MiB in 512 KiB records through tapectl, beside dd
# moving the same records on the same filesystem.
#
# Usage: benches/tape-bench.sh            (root for the tgt part and for dropping caches)
# Environment:
#   BENCH_MB (2048)       data size;  BENCH_REPS (3) repetitions (tool order alternates)
#   BENCH_BLOCK (512K)    record size
#   BENCH_DIR (/var/tmp)  filesystem the virtual library and dd's output live on
#   BENCH_TGT (1)         0 skips the tgt-over-iSCSI part
#   TAPECTL (target/release/tapectl)
#
# What it measures (wall-clock seconds, medians; ratio = dd time / tapectl time, so > 1 means tapectl is faster):
#   vtl write   `tapectl drive write` of the source into a virtual-library cartridge (one file per record in
#               the LTFS file-backend layout), ending with a filemark, which the virtual drive treats as a
#               sync point (like a real drive flushing its buffer) -- against `dd bs=512k conv=fsync` (the same
#               durability) and against plain `dd bs=512k` (none).
#   vtl read    `tapectl drive read` of those records to /dev/null vs `dd if=copy of=/dev/null bs=512k`, both from
#               the page cache (warm) and after dropping caches (cold).
#   iscsi       the same write/read through tgt's virtual library over iSCSI on 127.0.0.1 (tgt stores the tape
#               as one file), against the same dd figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MB:-2048}; REPS=${BENCH_REPS:-3}; BLOCK=${BENCH_BLOCK:-512K}; DIR=${BENCH_DIR:-/var/tmp}
TAPECTL=${TAPECTL:-target/release/tapectl}
[ -x "$TAPECTL" ] && [ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p tapectl >&2
work=$(mktemp -d "$DIR/rvtape.XXXXXX")
tgt_dir=""
cleanup() { [ -n "$tgt_dir" ] && scripts/tgt-vtl.sh stop "$tgt_dir" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
export RACKVAULT_LOCK_DIR=$work/locks

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches || true; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "generating $MB MiB of incompressible data..." >&2
head -c $((MB * 1024 * 1024)) /dev/urandom >"$work/src.bin"

declare -A T
add() { T[$1]="${T[$1]:-} $2"; }

"$TAPECTL" --vtl "$work/vtl" vtl create --capacity-mb $((MB * 2 + 1024)) --drives lto6 >/dev/null
vt() { "$TAPECTL" --vtl "$work/vtl" "$@"; }
for r in $(seq "$REPS"); do
    # A fresh cartridge each time: overwriting a used one would time the removal of its old records.
    vt load "RV$(printf %04d $(( (r - 1) % 8 + 1 )))L6" >/dev/null
    for order in a b; do
        if { [ $order = a ] && [ $((r % 2)) = 1 ]; } || { [ $order = b ] && [ $((r % 2)) = 0 ]; }; then
            drop
            add vtl_write "$(secs vt drive write --block-size "$BLOCK" "$work/src.bin")"
        else
            rm -f "$work/dd.out"; drop
            add dd_write_fsync "$(secs dd if="$work/src.bin" of="$work/dd.out" bs="${BLOCK,,}" conv=fsync)"
            rm -f "$work/dd.out"; drop
            add dd_write "$(secs dd if="$work/src.bin" of="$work/dd.out" bs="${BLOCK,,}")"
        fi
    done
    # Warm: each tool reads its data once untimed, so both come from the page cache.
    vt drive rewind >/dev/null; vt drive read --block-size "$BLOCK" --to /dev/null >/dev/null; vt drive rewind >/dev/null
    add vtl_read_warm "$(secs vt drive read --block-size "$BLOCK" --to /dev/null)"
    cat "$work/dd.out" >/dev/null
    add dd_read_warm "$(secs dd if="$work/dd.out" of=/dev/null bs="${BLOCK,,}")"
    vt drive rewind >/dev/null; drop
    add vtl_read_cold "$(secs vt drive read --block-size "$BLOCK" --to /dev/null)"
    drop
    add dd_read_cold "$(secs dd if="$work/dd.out" of=/dev/null bs="${BLOCK,,}")"
done
# The data read back is the data written.
vt drive rewind >/dev/null
vt drive read --block-size "$BLOCK" --to "$work/back.bin" >/dev/null
cmp "$work/src.bin" "$work/back.bin"; rm -f "$work/back.bin"

if [ "${BENCH_TGT:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
    tgt_dir=$work/tgt
    url=$(TGT_TAPE_MB=$((MB + 512)) scripts/tgt-vtl.sh start "$tgt_dir" 3999)
    printf '[library]\ntransport = "iscsi"\nurl = "%s"\nchanger_lun = 3\ndrive_luns = [1, 2]\n' "$url" >"$work/iscsi.toml"
    it() { "$TAPECTL" --config "$work/iscsi.toml" "$@"; }
    it load RV0001L6 >/dev/null
    for r in $(seq "$REPS"); do
        it drive rewind >/dev/null; drop
        add iscsi_write "$(secs it drive write --block-size "$BLOCK" "$work/src.bin")"
        it drive rewind >/dev/null
        add iscsi_read "$(secs it drive read --block-size "$BLOCK" --to /dev/null)"
    done
fi

m() { echo "${T[$1]}" | tr ' ' '\n' | grep . | median; }
mbps() { echo "$MB / $1" | bc -l | xargs printf '%.0f'; }
row() { local t; t=$(m "$1"); printf '| %-32s | %8.2f s | %6s MiB/s |' "$2" "$t" "$(mbps "$t")"; [ -n "${3:-}" ] && printf ' %.2fx |' "$(echo "$(m "$3") / $t" | bc -l)"; echo; }
echo
echo "tape-bench: $MB MiB in $BLOCK records, $REPS repetitions, on $(df -T "$DIR" | awk 'NR==2 {print $2}') ($DIR), $(git rev-parse --short HEAD)"
echo "| what | median | rate | dd time / this |"
echo "|---|---|---|---|"
row dd_write "dd bs=$BLOCK (no sync)"
row dd_write_fsync "dd bs=$BLOCK conv=fsync"
row vtl_write "tapectl write, virtual library" dd_write_fsync
echo "|   vs dd without sync | | | $(printf '%.2fx' "$(echo "$(m dd_write) / $(m vtl_write)" | bc -l)") |"
row dd_read_warm "dd read, warm"
row vtl_read_warm "tapectl read, virtual, warm" dd_read_warm
row dd_read_cold "dd read, cold"
row vtl_read_cold "tapectl read, virtual, cold" dd_read_cold
if [ -n "${T[iscsi_write]:-}" ]; then
    row iscsi_write "tapectl write, tgt over iSCSI" dd_write_fsync
    row iscsi_read "tapectl read, tgt over iSCSI" dd_read_warm
fi
