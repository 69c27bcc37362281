#!/usr/bin/env bash
# ltfs-bench.sh: `tapectl ltfs put` of the benchmark corpus onto a virtual-library LTFS volume, and
# `tapectl ltfs get` of everything back, beside dd moving the same bytes as raw 512 KiB records on the
# same filesystem.
#
# Usage: benches/ltfs-bench.sh            (root only for dropping caches between runs; works without)
# Environment:
#   BENCH_FILES (20000), BENCH_BIG_MB (64)   corpus (`../shared/bench/corpus.py make DIR --files N --big-mb M`)
#   BENCH_REPS (3)        repetitions; the tool order alternates each repetition
#   BENCH_DIR (/var/tmp)  filesystem the corpus, the virtual library and dd's output live on
#   TAPECTL (target/release/tapectl); BENCH_BUILD=0 skips `cargo build --release`
#
# The peer. LTFS puts each file's bytes on tape as full 512 KiB records (a file's last record short), so
# the equal-bytes raw write is every file's contents, read file by file, written as 512 KiB records:
#   find DIR -type f | sort | xargs cat | dd of=raw bs=512k iflag=fullblock
# It opens and reads the same 20,000 files as `put` and writes exactly the bytes put writes as data
# (hard links and sparse files counted in full, as put stores them), but no directories, metadata or
# index. `tar cf -` would be the other candidate; it adds a 512-byte header per file and pads, i.e. more
# bytes than put writes, and handles hard links and sparse files differently, so it is not equal-bytes.
# `put` ends with unmount, whose filemarks are sync points on the virtual drive (the records reach the
# disk, like a real drive flushing its buffer), so the like-for-like peer is `dd conv=fsync`; plain `dd`
# (page cache only) is shown too.
#   get       `tapectl ltfs get / --to OUT` (creates every file, in tape order) vs `dd if=raw of=/dev/null
#             bs=512k` (reads the same bytes, creates nothing), both from the page cache after one untimed
#             read, so this ratio charges get for 20,000 file creations dd does not do.
# Ratios are dd time / tapectl time (> 1: tapectl faster). Output: stdout (markdown table).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${BENCH_FILES:-20000}; BIG=${BENCH_BIG_MB:-64}; REPS=${BENCH_REPS:-3}; DIR=${BENCH_DIR:-/var/tmp}
TAPECTL=${TAPECTL:-target/release/tapectl}
[ -x "$TAPECTL" ] && [ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p tapectl >&2
TAPECTL=$(realpath "$TAPECTL")
work=$(mktemp -d "$DIR/rvltfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
export RACKVAULT_LOCK_DIR=$work/locks

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches || true; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "making the corpus ($FILES files, big files $BIG MB)..." >&2
python3 ../shared/bench/corpus.py make "$work/src" --files "$FILES" --big-mb "$BIG" >&2
src=$work/src
raw_in() { cd "$src" && find . -type f -print0 | sort -z | xargs -0 cat; }
BYTES=$(cd "$src" && find . -type f -print0 | xargs -0 stat -c %s | awk '{s+=$1} END {print s}')
NFILES=$(cd "$src" && find . -type f | wc -l)

declare -A T
add() { T[$1]="${T[$1]:-} $2"; }

# Each repetition formats a fresh cartridge (formatting is not timed).
"$TAPECTL" --vtl "$work/vtl" vtl create --capacity-mb $(( (BYTES >> 20) * 2 + 2048 )) --drives lto6 \
    --barcodes "$(seq -f 'RV%04gL6' -s, 1 "$REPS")" >/dev/null
vt() { "$TAPECTL" --vtl "$work/vtl" "$@"; }
put_run() { vt ltfs put "$src" /; }
dd_write() { raw_in | dd of="$work/raw" bs=512k iflag=fullblock "$@" 2>/dev/null; }
for r in $(seq "$REPS"); do
    bc_=$(printf 'RV%04dL6' "$r")
    vt load "$bc_" >/dev/null
    vt ltfs format >/dev/null
    for order in a b; do
        if { [ $order = a ] && [ $((r % 2)) = 1 ]; } || { [ $order = b ] && [ $((r % 2)) = 0 ]; }; then
            drop
            add put "$(secs put_run)"
        else
            rm -f "$work/raw"; drop
            add dd_write_fsync "$(secs dd_write conv=fsync)"
            rm -f "$work/raw"; drop
            add dd_write "$(secs dd_write)"
        fi
    done
    # Read back, warm: each side reads its data once untimed.
    rm -rf "$work/out"; mkdir "$work/out"
    vt ltfs get /src --to "$work/out" >/dev/null
    rm -rf "$work/out"; mkdir "$work/out"; sync
    add get "$(secs vt ltfs get /src --to "$work/out")"
    cat "$work/raw" >/dev/null
    add dd_read "$(secs dd if="$work/raw" of=/dev/null bs=512k)"
    vt unload >/dev/null
done
# What came back is what went in (contents of every regular file).
diff <(cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha1sum) \
     <(cd "$work/out/src" && find . -type f -print0 | sort -z | xargs -0 sha1sum) >/dev/null \
    || { echo "ltfs-bench: files read back differ from the corpus" >&2; exit 1; }
[ "$(stat -c %s "$work/raw")" = "$BYTES" ] || { echo "ltfs-bench: dd wrote $(stat -c %s "$work/raw") bytes, not $BYTES" >&2; exit 1; }

m() { echo "${T[$1]}" | tr ' ' '\n' | grep . | median; }
mbps() { echo "$BYTES / 1048576 / $1" | bc -l | xargs printf '%.0f'; }
row() { local t; t=$(m "$1"); printf '| %-34s | %7.2f s | %5s MiB/s |' "$2" "$t" "$(mbps "$t")"; [ -n "${3:-}" ] && printf ' %.2fx |' "$(echo "$(m "$3") / $t" | bc -l)"; echo; }
echo
echo "ltfs-bench: $NFILES files, $((BYTES >> 20)) MiB, 512 KiB records, $REPS repetitions, on $(df -T "$DIR" | awk 'NR==2 {print $2}') ($DIR), $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| what | median | rate | dd time / this |"
echo "|---|---|---|---|"
row dd_write "cat files \\| dd bs=512k (no sync)"
row dd_write_fsync "cat files \\| dd bs=512k conv=fsync"
row put "tapectl ltfs put (incl. unmount)" dd_write_fsync
echo "|   vs dd without sync | | | $(printf '%.2fx' "$(echo "$(m dd_write) / $(m put)" | bc -l)") |"
row dd_read "dd read to /dev/null, warm"
row get "tapectl ltfs get, warm" dd_read
