#!/usr/bin/env bash
# sets-bench.sh: tape sets on the virtual library against their peers on the same data.
#
#   full set    `tapectl set write --full` of a backup snapshot of the corpus (one copy, one drive) vs
#               `tapectl ltfs put` of the same snapshot tree onto a fresh volume (target >= 0.9x), and vs
#               the equal-bytes raw write `find | sort | xargs cat | dd bs=512k conv=fsync` (>= 0.8x),
#               the peer ltfs-bench.sh explains.
#   two copies  `set write --full --copies 2` on two drives at once vs one copy (target <= 1.2x the time).
#   incremental after `corpus.py mutate --percent 2`: bytes the incremental set put on tape vs bytes of
#               content the new snapshot has that the old one did not (target <= 1.1x + the manifest).
#   one file    `tapectl restore` of one small file: records read (the drive's volume statistics) vs the
#               set's records, and its time vs restoring the whole set.
#   memory      peak RSS of `set write` of a snapshot of BENCH_MEM_FILES small files (buffer 16 MiB),
#               per file above the same command on a 1-file snapshot (target <= 200 B per file).
#
# Usage: benches/sets-bench.sh     (root only for dropping caches between runs; works without)
# Environment:
#   BENCH_FILES (20000), BENCH_BIG_MB (64)   corpus (`../shared/bench/corpus.py make DIR --files N --big-mb M`)
#   BENCH_REPS (3)          repetitions; the tool order alternates each repetition
#   BENCH_MEM_FILES (200000) files of the memory run (0 skips it)
#   BENCH_DIR (/var/tmp)    filesystem for the corpus, the store and the virtual library
#   BENCH_BUILD=0           use target/release/{tapectl,backupd} as they are
# Ratios are peer time / tapectl time (> 1: tapectl faster) unless the row says otherwise. Output: stdout
# (markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${BENCH_FILES:-20000}; BIG=${BENCH_BIG_MB:-64}; REPS=${BENCH_REPS:-3}; DIR=${BENCH_DIR:-/var/tmp}
MEM_FILES=${BENCH_MEM_FILES:-200000}
[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p tapectl -p backupd >&2
TAPECTL=$(realpath target/release/tapectl); BACKUPD=$(realpath target/release/backupd)
work=$(mktemp -d "$DIR/rvsets.XXXXXX")
trap 'rm -rf "$work"' EXIT
export RACKVAULT_LOCK_DIR=$work/locks

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >"$work/last.out" 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches || true; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
m() { echo "${T[$1]}" | tr ' ' '\n' | grep . | median; }

echo "making the corpus ($FILES files, big files $BIG MB)..." >&2
python3 ../shared/bench/corpus.py make "$work/src" --files "$FILES" --big-mb "$BIG" >&2
cat >"$work/rackvault.toml" <<EOF
state_dir = "state"
[store]
kind = "dir"
path = "store"
[[job]]
name = "home"
source = "src"
[library]
transport = "virtual"
dir = "vtl"
[[pool]]
name = "sets"
barcodes = ["RV*"]
allocation = "new"
[tape]
buffer_mb = 256
EOF
B() { "$BACKUPD" --config "$work/rackvault.toml" "$@"; }
T() { "$TAPECTL" --config "$work/rackvault.toml" "$@"; }
B run home >/dev/null
snap1=$(B --json snapshots home | jq -r '.[-1].name')
tree=$work/store/home/snapshots/$snap1
BYTES=$(cd "$tree" && find . -path ./.rackvault -prune -o -type f -print0 | xargs -0 stat -c %s | awk '{s+=$1} END {print s}')
NFILES=$(cd "$tree" && find . -path ./.rackvault -prune -o -type f -print | wc -l)
# Every set starts on a new cartridge (as put starts on a fresh volume); PT* cartridges are for
# ltfs put (outside the pool). Formatting is part of a set's time, not of put's.
cap=$(( (BYTES >> 20) * 2 + 2048 ))
T vtl create --capacity-mb "$cap" --drives lto6,lto6 --slots 40 \
    --barcodes "$( (seq -f 'RV%04gL6' 1 $((REPS * 4 + 4)); seq -f 'PT%04gL6' 1 "$REPS") | paste -sd,)" >/dev/null

raw_in() { cd "$tree" && find . -path ./.rackvault -prune -o -type f -print0 | sort -z | xargs -0 cat; }
dd_write() { raw_in | dd of="$work/raw" bs=512k iflag=fullblock conv=fsync 2>/dev/null; }
for r in $(seq "$REPS"); do
    pt=$(printf 'PT%04dL6' "$r")
    T load "$pt" --drive 1 >/dev/null
    T ltfs format --drive 1 >/dev/null
    for order in a b c; do
        # Rotate which tool goes first.
        k=$(( ( $(printf '%d' "'$order") - 97 + r ) % 3 ))
        case $k in
            0) drop; add set1 "$(secs T set write home --full --drive 0)" ;;
            1) drop; add put "$(secs T ltfs put --drive 1 "$tree" /rep$r)" ;;
            2) rm -f "$work/raw"; drop; add dd "$(secs dd_write)" ;;
        esac
    done
    T unload --drive 1 >/dev/null 2>&1 || true
    drop; add set2 "$(secs T set write home --full --copies 2 --drive 0,1)"
    # The machine's own floor for two copies: two equal-bytes writes at once on the same disk (the
    # virtual drives share it and the CPUs; real drives do not).
    rm -f "$work/raw" "$work/raw2"; drop
    add dd2 "$(secs bash -c "$(declare -f raw_in); tree='$tree'; (raw_in | dd of='$work/raw' bs=512k iflag=fullblock conv=fsync 2>/dev/null) & (raw_in | dd of='$work/raw2' bs=512k iflag=fullblock conv=fsync 2>/dev/null); wait")"
    rm -f "$work/raw2"
done
[ "$(stat -c %s "$work/raw")" = "$BYTES" ] || { echo "sets-bench: dd wrote $(stat -c %s "$work/raw") bytes, not $BYTES" >&2; exit 1; }

# Incremental after a day of use.
python3 ../shared/bench/corpus.py mutate "$work/src" --percent 2 >&2
B run home >/dev/null
snap2=$(B --json snapshots home | jq -r '.[-1].name')
T --json set write home --drive 0 >"$work/inc.json"
set2=$(jq -r .set "$work/inc.json")
inc_bytes=$(jq '[.copies[0].tapes[].bytes] | add' "$work/inc.json")
inc_files=$(jq .files "$work/inc.json")
man_bytes=$(stat -c %s "$work/state/tape-sets/$set2/copy-1.manifest.zst")
mf() { zstdcat "$work/store/home/snapshots/$1/.rackvault/manifest.zst" | tail -n +2; }
changed=$(jq -s --slurpfile old <(mf "$snap1" | jq -c 'select(.type=="file") | .hash') \
    '($old | map({(.): true}) | add) as $seen | map(select(.type=="file" and .link == null and ($seen[.hash] | not)) | .size) | add // 0' \
    <(mf "$snap2"))

# One file back vs the whole set: the newest full set (the one `restore` of the first snapshot reads).
full_set=$(jq -r '.[] | select(.set.kind=="full") | .set.uuid' <(T --json set list) | tail -1)
tape=$(T --json set show "$full_set" | jq -r '.copies[0].tapes[0].barcode')
stat_of() { T load "$tape" >/dev/null; T --json drive status | jq ".volume_statistics[] | select(.name==\"$1\") | .value.counter"; }
one=$(zstdcat "$work/state/tape-sets/$full_set/copy-1.manifest.zst" | tail -n +2 | jq -r 'select(.in=="here" and .type=="file" and .size < 65536 and .size > 0) | .path' | sed -n 100p)
r0=$(stat_of "total data sets read")
rm -rf "$work/out1"; t_one=$(secs T restore home "$snap1" "$one" --to "$work/out1")
r1=$(stat_of "total data sets read")
set_records=$(( $(T --json set show "$full_set" | jq '[.copies[0].tapes[].bytes] | add') / 524288 ))
rm -rf "$work/outall"; drop; t_all=$(secs T restore home "$snap1" --to "$work/outall")
rm -rf "$work/out1" "$work/outall"

# Memory: many small files, 16 MiB buffer.
mem_row=""
if [ "$MEM_FILES" -gt 0 ]; then
    echo "memory run: $MEM_FILES files..." >&2
    mem=$work/mem; mkdir -p "$mem/src/one" "$mem/src2"
    echo x >"$mem/src2/only"
    python3 - "$mem/src/one" "$MEM_FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}"), "w") as f:
        f.write(str(i))
PY
    sed -e 's/buffer_mb = 256/buffer_mb = 16/' -e "s|^source = \"src\"|source = \"mem/src\"|" "$work/rackvault.toml" >"$work/mem.toml"
    printf '[[job]]\nname = "tiny"\nsource = "mem/src2"\n' >>"$work/mem.toml"
    BM() { "$BACKUPD" --config "$work/mem.toml" "$@"; }
    TM() { "$TAPECTL" --config "$work/mem.toml" "$@"; }
    BM run home >/dev/null; BM run tiny >/dev/null
    rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
    rss_tiny=$(rss "$TAPECTL" --config "$work/mem.toml" set write tiny --full --drive 0)
    rss_many=$(rss "$TAPECTL" --config "$work/mem.toml" set write home --full --drive 0)
    per_file=$(( (rss_many - rss_tiny) * 1024 / MEM_FILES ))
    mem_row="| peak RSS, $MEM_FILES small files (16 MiB buffer) | $((rss_many / 1024)) MiB | 1 file: $((rss_tiny / 1024)) MiB | $per_file B per file (target <= 200) |"
fi

mbps() { echo "$BYTES / 1048576 / $1" | bc -l | xargs printf '%.0f'; }
ratio() { printf '%.2fx' "$(echo "$1 / $2" | bc -l)"; }
echo
echo "sets-bench: $NFILES files, $((BYTES >> 20)) MiB, $REPS repetitions, on $(df -T "$DIR" | awk 'NR==2 {print $2}') ($DIR), $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| what | median | rate | ratio |"
echo "|---|---|---|---|"
echo "| cat files \\| dd bs=512k conv=fsync | $(printf '%.2f' "$(m dd)") s | $(mbps "$(m dd)") MiB/s | |"
echo "| tapectl ltfs put (incl. unmount) | $(printf '%.2f' "$(m put)") s | $(mbps "$(m put)") MiB/s | |"
echo "| tapectl set write --full, 1 copy | $(printf '%.2f' "$(m set1)") s | $(mbps "$(m set1)") MiB/s | vs put $(ratio "$(m put)" "$(m set1)") (>= 0.9), vs dd $(ratio "$(m dd)" "$(m set1)") (>= 0.8) |"
echo "| two cat \\| dd conv=fsync at once (the disk's floor for two copies) | $(printf '%.2f' "$(m dd2)") s | | $(ratio "$(m dd2)" "$(m dd)") the time of one |"
echo "| tapectl set write --full, 2 copies on 2 drives | $(printf '%.2f' "$(m set2)") s | | $(ratio "$(m set2)" "$(m set1)") the time of one copy (<= 1.2) |"
echo "| incremental after mutate --percent 2 | $inc_files files | $inc_bytes B on tape + $man_bytes B manifest | $(ratio "$inc_bytes" "$changed") of $changed B new content (<= 1.1) |"
echo "| restore one file ($one) | $(printf '%.2f' "$t_one") s | $((r1 - r0)) records read of the set's ~$set_records | whole set: $(printf '%.2f' "$t_all") s |"
[ -n "$mem_row" ] && echo "$mem_row"
true
