#!/usr/bin/env bash
# backup-bench.sh: backupd against cp -a / rsync on the shared benchmark corpus.
#
# Usage (from anywhere; root for drop_caches and the ZFS part):
#   benches/backup-bench.sh                        # full corpus, 3 alternating repetitions
#   BENCH_FILES=2000 BENCH_BIG_MB=8 BENCH_REPS=1 benches/backup-bench.sh   # quick smoke run
#
# Environment:
#   BENCH_FILES (20000)  BENCH_BIG_MB (64)  BENCH_PERCENT (2)   corpus.py make/mutate parameters
#   BENCH_REPS (3)       repetitions of the directory-store section (tool order alternates)
#   BENCH_ZFS_REPS (=BENCH_REPS)  repetitions of the ZFS section (order alternates too); BENCH_ZFS=0 skips it (it is skipped without root)
#   BENCH_WORK (/tmp/rackvault-bench)   scratch dir, wiped at start and at exit (BENCH_KEEP=1 keeps it)
#   BENCH_OUT (/tmp/bench-results.md)   markdown report; a JSON twin is written next to it (.json)
#   BENCH_POOL_GB (6)    size of the sparse file backing the throwaway zpool
#   BACKUPD (target/release/backupd)    binary under test;  CORPUS_PY (/work/shared/bench/corpus.py)
#
# What it measures (wall-clock seconds; medians over repetitions, ratios = median of per-repetition ratios):
#  Directory store (local fs):
#   full          backupd run into an empty store (sync=true, the default, and sync=false)
#                 vs cp -a, vs rsync -a (each also "+sync": the time of a following sync(1)).
#                 Caches dropped and the source re-read before each tool.
#   no change     second backupd run vs rsync -a onto its synced copy, and vs rsync -a --link-dest
#                 (rsync's snapshot equivalent: a new hard-linked tree). Warm caches, dirty data flushed.
#   after mutate  corpus.py mutate, then the same three (caches dropped + source re-read before each).
#   snapshot cost bytes_written from backupd --json, and growth of `du` (apparent and allocated; du counts
#                 each hard-linked inode once) of the snapshots dir / rsync trees.
#  ZFS store (throwaway pool on a sparse file, datasets compression=lzjb atime=off):
#   backupd (kind=zfs) vs rsync -a vs rsync -a --inplace --no-whole-file, each followed by a snapshot;
#   increment of each snapshot = `zfs send [-i prev] snap | wc -c` (zfs-fuse has no `written` property),
#   compared with the bytes that actually changed in the corpus (computed by diffing pristine and mutated
#   trees, see changed_bytes() below).
#  rsync runs are plain `rsync -a` as in the issue and the peer figures (no --delete: files deleted or renamed by
#  the mutate stay behind in rsync's copy). An untimed fidelity check compares the final backups with the source
#  (`rsync -anciHX --delete`; the rsync --link-dest tree, checked with -anci, is the control).
# Output: a table on stdout, BENCH_OUT (markdown), its .json twin, and ${BENCH_OUT%.md}-logs/ (every command's
# stdout/stderr, raw results.tsv, check listings).
# Nothing outside BENCH_WORK and those outputs is written; the zpool (and zfs-fuse, if this script started it)
# is destroyed/stopped at exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
FILES=${BENCH_FILES:-20000}
BIG_MB=${BENCH_BIG_MB:-64}
PERCENT=${BENCH_PERCENT:-2}
REPS=${BENCH_REPS:-3}
ZFS_REPS=${BENCH_ZFS_REPS:-$REPS}
DO_ZFS=${BENCH_ZFS:-1}
WORK=${BENCH_WORK:-/tmp/rackvault-bench}
OUT=${BENCH_OUT:-/tmp/bench-results.md}
POOL_GB=${BENCH_POOL_GB:-6}
BACKUPD=${BACKUPD:-$repo/target/release/backupd}
CORPUS_PY=${CORPUS_PY:-/work/shared/bench/corpus.py}

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -x "$BACKUPD" ] || die "$BACKUPD missing: cd $repo && cargo build --release -p backupd"
[ -f "$CORPUS_PY" ] || die "$CORPUS_PY missing"
for t in rsync jq python3 du tar; do command -v "$t" >/dev/null || die "$t not found"; done
case "$WORK" in /|/tmp|/work|"") die "refusing BENCH_WORK=$WORK" ;; esac

is_root=0; [ "$(id -u)" = 0 ] && is_root=1
if [ "$DO_ZFS" = 1 ] && [ $is_root = 0 ]; then log "not root: skipping the ZFS section"; DO_ZFS=0; fi
if [ "$DO_ZFS" = 1 ] && ! command -v zpool >/dev/null; then log "zpool not found: skipping ZFS"; DO_ZFS=0; fi

POOL=""
STARTED_ZFS_FUSE=0
ZDIR="$WORK/zfs"      # pool file, pidfile, mountpoint: kept apart from the rest so cleanup is simple

destroy_pool() {
    local p=$1
    [ -n "$p" ] || return 0
    zpool list "$p" >/dev/null 2>&1 || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do zpool destroy -f "$p" 2>/dev/null && return 0; sleep 0.5; done
    log "WARNING: could not destroy pool $p"
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$POOL" ]; then destroy_pool "$POOL"; fi
    if [ "$STARTED_ZFS_FUSE" = 1 ] && [ -f "$ZDIR/zfs-fuse.pid" ]; then
        kill "$(cat "$ZDIR/zfs-fuse.pid")" 2>/dev/null
    fi
    if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Idempotence: a previous interrupted run may have left its pool (its name is recorded) and files.
if [ -f "$ZDIR/pool-name" ] && [ $is_root = 1 ] && command -v zpool >/dev/null; then
    old=$(cat "$ZDIR/pool-name")
    case "$old" in rvbench*) log "destroying leftover pool $old"; destroy_pool "$old" ;; esac
fi
rm -rf "$WORK"
mkdir -p "$WORK" "$(dirname "$OUT")"
RES="$WORK/results.tsv"       # section rep tool phase secs bytes_written du_app du_alloc send_bytes
: >"$RES"; : >"$WORK/checks.tsv"
LOGS="$WORK/logs"; mkdir -p "$LOGS"

drop_caches() {
    sync
    if [ $is_root = 1 ]; then echo 3 >/proc/sys/vm/drop_caches || log "WARNING: drop_caches failed"; fi
}
warm() { tar cf - -C "$1" . | cat >/dev/null; }   # (tar special-cases >/dev/null: pipe through cat)
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
du_app() { du -sbc "$@" 2>/dev/null | tail -1 | cut -f1; }        # apparent bytes, each inode once
du_alloc() { du -sc -B1 "$@" 2>/dev/null | tail -1 | cut -f1; }   # allocated bytes, each inode once
# check_tree NAME SRC COPY [RSYNC-FLAGS]: untimed fidelity check (rsync dry run with checksums, also comparing
# hard links and xattrs unless flags are given; .rackvault/ ignored)
check_tree() {
    local n
    if [ ! -d "$3" ]; then printf '%s\t%s\n' "$1" "missing:$3" >>"$WORK/checks.tsv"; return; fi
    rsync ${4:--anciHX} --delete --exclude=/.rackvault/ "$2/" "$3/" >"$LOGS/check-$1.txt" 2>&1 || true
    n=$(wc -l <"$LOGS/check-$1.txt")
    printf '%s\t%s\n' "$1" "$n" >>"$WORK/checks.tsv"
    log "check $1: $n differences between source and backup$([ "$n" = 0 ] || echo ": $(head -5 "$LOGS/check-$1.txt" | tr '\n' ' ')")"
}
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

# timed NAME CMD...: runs CMD with output to a log; sets T (seconds) and RC.
timed() {
    local name=$1; shift
    local t0 t1
    t0=$(now)
    set +e; "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"; RC=$?; set -e
    t1=$(now)
    T=$(elapsed "$t0" "$t1")
    if [ $RC != 0 ]; then log "WARNING: $name exited $RC: $(tail -3 "$LOGS/$name.err" | tr '\n' ' ')"; fi
}

# bd_run NAME CONFIG: timed backupd run; sets T, BW (bytes_written or FAIL), SNAP.
bd_run() {
    local name=$1 cfg=$2
    timed "$name" "$BACKUPD" --config "$cfg" --json run bench --no-prune
    BW=FAIL; SNAP=""
    if jq -e '.[0].ok == true' "$LOGS/$name.out" >/dev/null 2>&1; then
        BW=$(jq -r '.[0].summary.stats.bytes_written' "$LOGS/$name.out")
        SNAP=$(jq -r '.[0].summary.snapshot' "$LOGS/$name.out")
    else
        log "WARNING: backupd run $name failed (rc=$RC): $(head -c 600 "$LOGS/$name.out") $(tail -3 "$LOGS/$name.err" | tr '\n' ' ')"
        T=FAIL
    fi
}

write_dir_config() {   # FILE SOURCE STOREDIR SYNC
    cat >"$1" <<EOF
state_dir = "$(basename "$3")-state"
[store]
kind = "dir"
path = "$(basename "$3")"
sync = $4
[[job]]
name = "bench"
source = "$2"
EOF
}

# Bytes that actually changed between two trees (regular files; symlinks and directories ignored):
#  changed_bytes       the brief's measure: same path & same size -> differing 4 KiB blocks x 4096; same path &
#                      other size -> new size; new path -> its size (a renamed directory's files count in
#                      full); deleted -> 0.
#  changed_bytes_min   block-level and rename-aware: for a same-path file, the 4 KiB blocks of the new content
#                      that differ from the old at the same offset (appends count only the tail, truncation 0);
#                      a new path whose content exists anywhere in the old tree (a move) -> 0.
#  changed_bytes_rec   like _min, in ZFS logical blocks (recordsize 128 KiB): a changed or new file of up to
#                      128 KiB counts its size rounded up to 512 B; a bigger one 128 KiB per differing record (the
#                      tail record too); moves free: about the least data (DRR_WRITE payload) any writer can put in
#                      a snapshot on a recordsize=128K dataset.
changed_bytes() {
    python3 - "$1" "$2" <<'EOF'
import hashlib, json, os, sys
old_root, new_root = sys.argv[1], sys.argv[2]
B = 4096
def files(root):
    out, seen = {}, set()
    for dp, dn, fn in os.walk(root):
        for f in fn:
            p = os.path.join(dp, f)
            st = os.lstat(p)
            if not os.path.isfile(p) or os.path.islink(p) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            out[os.path.relpath(p, root)] = st.st_size
    return out
def read(p):
    with open(p, "rb") as f:
        return f.read()
def diff(old, new, bs):   # bytes of `new` in bs-sized blocks that differ from `old` at the same offset
    return sum(len(new[o:o + bs]) for o in range(0, len(new), bs) if new[o:o + bs] != old[o:o + bs])
REC = 128 << 10
def zfs_logical(old, new):   # logical bytes of the ZFS blocks of `new` that differ from `old` (recordsize=REC)
    if len(new) <= REC:
        return -(-len(new) // 512) * 512
    return sum(REC for o in range(0, len(new), REC) if new[o:o + REC] != old[o:o + REC])
old, new = files(old_root), files(new_root)
old_hashes = set()
for rel in old:
    if rel not in new:
        with open(os.path.join(old_root, rel), "rb") as f:
            old_hashes.add(hashlib.sha256(f.read()).digest())
a = m = rec = 0
st = dict(changed=0, added=0, moved=0, deleted=sum(1 for r in old if r not in new))
moved_bytes = 0
for rel, size in new.items():
    np_ = os.path.join(new_root, rel)
    if rel in old:
        od, nd = read(os.path.join(old_root, rel)), read(np_)
        if od == nd:
            continue
        st["changed"] += 1
        d4 = diff(od, nd, B)
        a += d4 if size == old[rel] else size   # (same size: the differing blocks are all full but the last)
        m += d4
        rec += zfs_logical(od, nd)
    else:
        with open(np_, "rb") as f:
            h = hashlib.sha256(f.read()).digest()
        a += size
        if h in old_hashes:
            st["moved"] += 1; moved_bytes += size
        else:
            st["added"] += 1; m += size
            with open(np_, "rb") as f:
                rec += zfs_logical(b"", f.read())
print(json.dumps(dict(changed_bytes=a, changed_bytes_min=m, changed_bytes_rec=rec, moved_bytes=moved_bytes, **st)))
EOF
}

PROVENANCE="$("$BACKUPD" --version 2>/dev/null || echo '?'), binary built $(date -r "$BACKUPD" '+%F %T'), sha256 $(sha256sum "$BACKUPD" | cut -c1-12); repo HEAD $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" status --porcelain -- backupd common 2>/dev/null | grep -q . && echo ' (sources modified)' || true)"
log "backupd: $BACKUPD: $PROVENANCE"
log "corpus: files=$FILES big_mb=$BIG_MB mutate percent=$PERCENT; reps=$REPS zfs=$DO_ZFS/$ZFS_REPS; work=$WORK"
log "machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); fs of $WORK: $(df -hT "$WORK" | awk 'NR==2{print $2", "$5" free"}')"

# ---------------------------------------------------------------- corpus (once; kept pristine)
PRISTINE="$WORK/pristine"
log "making corpus (pristine) ..."
python3 "$CORPUS_PY" make "$PRISTINE" --files "$FILES" --big-mb "$BIG_MB" >"$WORK/make.json"
log "corpus: $(cat "$WORK/make.json"); du apparent $(du_app "$PRISTINE"), allocated $(du_alloc "$PRISTINE")"
# The changed-bytes reference: a throwaway mutated copy (mutate is deterministic).
cp -a "$PRISTINE" "$WORK/mutref"
python3 "$CORPUS_PY" mutate "$WORK/mutref" --percent "$PERCENT" >"$WORK/mutate.json"
log "mutate: $(cat "$WORK/mutate.json")"
changed_bytes "$PRISTINE" "$WORK/mutref" >"$WORK/changed.json"
log "changed: $(cat "$WORK/changed.json")"
rm -rf "$WORK/mutref"     # (deleted long before the create-heavy measurements below)

# ---------------------------------------------------------------- directory store
# Nothing is deleted during this section: every repetition gets fresh directories (the ext4 here slows
# file creation for minutes after a bulk delete).
# dir_incremental PHASE LABEL ORDER PREP LD_BASE LD_NEW: one incremental run of every dir-store tool, in ORDER,
# each after PREP (sync or drop_caches) and a warm read of the source; rsync --link-dest links LD_NEW to LD_BASE.
dir_incremental() {
    local phase=$1 label=$2 order=$3 prep=$4 ldb=$5 ldn=$6 tool sn a0 l0
    for tool in $order; do
        $prep; warm "$SRC"
        case $tool in
        bd-sync|bd-nosync)
            sn=$SN_S; [ $tool = bd-nosync ] && sn=$SN_N
            a0=$(du_app "$sn"); l0=$(du_alloc "$sn")
            bd_run "dir$r-$tool-$phase" "$D/$tool.toml"
            record dir "$r" "$tool" "$phase" "$T" "$BW" $(( $(du_app "$sn") - a0 )) $(( $(du_alloc "$sn") - l0 )) - ;;
        rsync)
            timed "dir$r-rsync-$phase" rsync -a "$SRC/" "$D/rs/"
            record dir "$r" rsync "$phase" "$T" - - - - ;;
        rsync-ld)
            a0=$(du_app "$D/$ldb"); l0=$(du_alloc "$D/$ldb")
            timed "dir$r-rsyncld-$phase" rsync -a --link-dest="$D/$ldb" "$SRC/" "$D/$ldn/"
            record dir "$r" rsync-ld "$phase" "$T" - $(( $(du_app "$D/$ldb" "$D/$ldn") - a0 )) \
                $(( $(du_alloc "$D/$ldb" "$D/$ldn") - l0 )) - ;;
        esac
        log "  $tool $label: $T s"
    done
}

for r in $(seq 1 "$REPS"); do
    D="$WORK/dir$r"; mkdir -p "$D"
    SRC="$D/corpus"
    cp -a "$PRISTINE" "$SRC"
    write_dir_config "$D/bd-sync.toml" "$SRC" "$D/bd-sync-store" true
    write_dir_config "$D/bd-nosync.toml" "$SRC" "$D/bd-nosync-store" false
    SN_S="$D/bd-sync-store/bench/snapshots"; SN_N="$D/bd-nosync-store/bench/snapshots"
    if [ $((r % 2)) = 1 ]; then order="bd-sync bd-nosync cp rsync"; else order="rsync cp bd-nosync bd-sync"; fi
    log "dir rep $r/$REPS: full (order: $order)"
    for tool in $order; do
        drop_caches; warm "$SRC"
        case $tool in
        bd-sync|bd-nosync)
            bd_run "dir$r-$tool-full" "$D/$tool.toml"
            sn=$SN_S; [ $tool = bd-nosync ] && sn=$SN_N
            record dir "$r" "$tool" full "$T" "$BW" "$(du_app "$sn")" "$(du_alloc "$sn")" - ;;
        cp)
            timed "dir$r-cp-full" cp -a "$SRC" "$D/cp"; tc=$T
            timed "dir$r-cp-sync" sync; ts=$T; T="$tc (+ sync $ts)"
            record dir "$r" cp full "$tc" - "$(du_app "$D/cp")" "$(du_alloc "$D/cp")" -
            record dir "$r" cp+sync full "$(python3 -c "print(round($tc + $ts, 3))")" - - - - ;;
        rsync)
            timed "dir$r-rsync-full" rsync -a "$SRC/" "$D/rs/"; tc=$T
            timed "dir$r-rsync-sync" sync; ts=$T; T="$tc (+ sync $ts)"
            record dir "$r" rsync full "$tc" - "$(du_app "$D/rs")" "$(du_alloc "$D/rs")" -
            record dir "$r" rsync+sync full "$(python3 -c "print(round($tc + $ts, 3))")" - - - - ;;
        esac
        log "  $tool full: $T s"
    done

    log "dir rep $r/$REPS: no change"
    # warm, no drop: every tool's previous tree was just written and is in cache; flush dirty data only
    if [ $((r % 2)) = 1 ]; then order="bd-sync bd-nosync rsync rsync-ld"; else order="rsync-ld rsync bd-nosync bd-sync"; fi
    dir_incremental nochange "no change" "$order" sync rs rsl1

    log "dir rep $r/$REPS: after mutate"
    python3 "$CORPUS_PY" mutate "$SRC" --percent "$PERCENT" >"$LOGS/dir$r-mutate.json"
    # rsync -a (in place into its copy) must run after rsync-ld, which links against the unmutated rsl1 tree:
    # rsl1 stays untouched, so the order between them does not matter; alternate the rest.
    if [ $((r % 2)) = 1 ]; then order="bd-sync bd-nosync rsync-ld rsync"; else order="rsync rsync-ld bd-nosync bd-sync"; fi
    dir_incremental mutate "after mutate" "$order" drop_caches rsl1 rsl2
    if [ "$r" = "$REPS" ]; then
        for st in sync nosync; do
            sn=$SN_S; [ $st = nosync ] && sn=$SN_N
            check_tree "dir-bd-$st" "$SRC" "$sn/$(ls "$sn" | sort | tail -1)"
        done
        check_tree dir-rsync-ld "$SRC" "$D/rsl2" -anci   # control (made with rsync -a: no -H/-X)
    fi
done

# ---------------------------------------------------------------- ZFS store
send_size() { zfs send "$@" | wc -c; }
# write_payload NAME SEND-ARGS...: DRR_WRITE payload bytes of a send stream (the data part; the rest is metadata)
write_payload() {
    local name=$1; shift
    if command -v zstreamdump >/dev/null; then
        zfs send "$@" | zstreamdump >"$LOGS/$name.zstreamdump" 2>&1 || true
        grep -m1 -i 'total write size' "$LOGS/$name.zstreamdump" | grep -oE '= *[0-9]+' | grep -oE '[0-9]+' || echo -
    else echo -; fi
}
if [ "$DO_ZFS" = 1 ]; then
    mkdir -p "$ZDIR/mnt"
    if ! zpool list >/dev/null 2>&1; then
        [ -e /dev/fuse ] || die "/dev/fuse missing: zfs-fuse cannot run (set BENCH_ZFS=0)"
        rm -f "$ZDIR/zfs-fuse.pid"
        zfs-fuse --pidfile "$ZDIR/zfs-fuse.pid" --no-kstat-mount
        STARTED_ZFS_FUSE=1
        for _ in $(seq 1 200); do zpool list >/dev/null 2>&1 && break; sleep 0.05; done
        zpool list >/dev/null 2>&1 || die "zfs-fuse did not start"
        log "started zfs-fuse (pid $(cat "$ZDIR/zfs-fuse.pid"))"
    fi
    POOL="rvbench$$"
    truncate -s "${POOL_GB}G" "$ZDIR/disk0.img"
    zpool create -f -m "$ZDIR/mnt" "$POOL" "$ZDIR/disk0.img"
    echo "$POOL" >"$ZDIR/pool-name"
    zfs set atime=off "$POOL"
    zfs set compression=lzjb "$POOL"
    log "pool $POOL on $ZDIR/disk0.img (${POOL_GB}G sparse), mounted at $ZDIR/mnt"

    for r in $(seq 1 "$ZFS_REPS"); do
        for ds in bench rsync rsyncip; do
            for i in $(seq 1 40); do   # zfs-fuse reports "dataset is busy" for a moment after a run
                zfs list "$POOL/$ds" >/dev/null 2>&1 || break
                zfs destroy -r "$POOL/$ds" 2>"$LOGS/zfs-destroy.err" && break
                [ "$i" = 40 ] && die "cannot destroy $POOL/$ds: $(cat "$LOGS/zfs-destroy.err")"
                sleep 0.5
            done
            zfs create -o compression=lzjb -o atime=off "$POOL/$ds"
        done
        SRC="$WORK/zsrc$r"
        cp -a "$PRISTINE" "$SRC"
        cat >"$ZDIR/bd.toml" <<EOF
state_dir = "bd-state-$r"
[store]
kind = "zfs"
parent = "$POOL/bench"
[[job]]
name = "bench"
source = "$SRC"
EOF
        if [ $((r % 2)) = 1 ]; then order="bd rsync rsyncip"; else order="rsyncip rsync bd"; fi
        prev_bd=""; prev_rs=""
        for phase in full nochange mutate; do
            [ $phase = mutate ] && python3 "$CORPUS_PY" mutate "$SRC" --percent "$PERCENT" >"$LOGS/zfs$r-mutate.json"
            log "zfs rep $r/$ZFS_REPS: $phase (order: $order)"
            for tool in $order; do
                if [ $phase = nochange ]; then sync; else drop_caches; fi
                warm "$SRC"
                case $tool in
                bd)
                    bd_run "zfs$r-bd-$phase" "$ZDIR/bd.toml"
                    snap=$(zfs list -H -t snapshot -o name -s creation -r "$POOL/bench/bench" 2>/dev/null | tail -1)
                    if [ -n "$SNAP" ] && [ "$snap" != "$POOL/bench/bench@$SNAP" ]; then
                        log "WARNING: newest snapshot $snap is not the reported $POOL/bench/bench@$SNAP"
                    fi
                    if [ "$BW" = FAIL ] || [ -z "$snap" ]; then sb=FAIL
                    elif [ -z "$prev_bd" ]; then sb=$(send_size "$snap")
                    else sb=$(send_size -i "$prev_bd" "$snap"); fi
                    wp=-
                    [ $phase = mutate ] && [ "$sb" != FAIL ] && wp=$(write_payload "zfs$r-bd-$phase" -i "$prev_bd" "$snap")
                    prev_bd=$snap
                    record zfs "$r" backupd "$phase" "$T" "$BW" "$wp" - "$sb" ;;
                rsync|rsyncip)
                    dest="$ZDIR/mnt/$tool"
                    if [ $tool = rsync ]; then timed "zfs$r-$tool-$phase" rsync -a "$SRC/" "$dest/"
                    else timed "zfs$r-$tool-$phase" rsync -a --inplace --no-whole-file "$SRC/" "$dest/"; fi
                    zfs snapshot "$POOL/$tool@$phase"
                    case $phase in
                    full) sb=$(send_size "$POOL/$tool@full") ;;
                    nochange) sb=$(send_size -i "$POOL/$tool@full" "$POOL/$tool@nochange") ;;
                    mutate) sb=$(send_size -i "$POOL/$tool@nochange" "$POOL/$tool@mutate") ;;
                    esac
                    wp=-
                    [ $phase = mutate ] && wp=$(write_payload "zfs$r-$tool-$phase" -i "$POOL/$tool@nochange" "$POOL/$tool@mutate")
                    record zfs "$r" "$tool" "$phase" "$T" - "$wp" - "$sb" ;;
                esac
                log "  $tool $phase: $T s, send ${sb} B"
            done
        done
        if [ "$r" = "$ZFS_REPS" ]; then
            check_tree zfs-bd "$SRC" "$(zfs get -H -o value mountpoint "$POOL/bench/bench" 2>/dev/null || echo none)"
        fi
        zfs list -o name,used,referenced,compressratio -r "$POOL" >"$LOGS/zfs$r-list.txt" 2>&1 || true
        zfs list -t snapshot -o name,used,referenced -r "$POOL" >>"$LOGS/zfs$r-list.txt" 2>&1 || true
    done
fi

# ---------------------------------------------------------------- report
python3 - "$RES" "$WORK/make.json" "$WORK/mutate.json" "$WORK/changed.json" "$OUT" "$REPS" "$ZFS_REPS" \
    "$FILES" "$BIG_MB" "$PERCENT" "$WORK/checks.tsv" "$(cut -d' ' -f1-3 /proc/loadavg)" "$PROVENANCE" <<'EOF'
import json, statistics, sys, datetime, os, platform
res, mk, mu, ch, out, reps, zreps, files, bigmb, pct, checks, load, prov = sys.argv[1:]
checks = [l.rstrip("\n").split("\t") for l in open(checks) if l.strip()]
make, mutate, changed = (json.load(open(p)) for p in (mk, mu, ch))
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
def num(x):
    try: return float(x)
    except ValueError: return None
data = {}   # (section, tool, phase) -> {rep: dict}
for sec, rep, tool, phase, secs, bw, dua, dul, sb in rows:
    data.setdefault((sec, tool, phase), {})[int(rep)] = dict(secs=num(secs), bw=num(bw), du_app=num(dua), du_alloc=num(dul), send=num(sb))
def med(sec, tool, phase, key="secs"):
    v = [d[key] for d in data.get((sec, tool, phase), {}).values() if d[key] is not None]
    return statistics.median(v) if v else None
def ratio(sec, a, b, phase, key="secs"):
    A, B = data.get((sec, a, phase), {}), data.get((sec, b, phase), {})
    v = [A[r][key] / B[r][key] for r in A if r in B and A[r][key] is not None and B[r][key]]
    return (statistics.median(v), v) if v else (None, [])
def fs(x, d=3): return "—" if x is None else f"{x:.{d}f}"
def fb(x):
    if x is None: return "—"
    return f"{x/1e6:,.2f} MB" if abs(x) >= 1e5 else f"{int(x):,} B"

lines, summary = [], {"corpus": make, "mutate": mutate, "changed": changed, "reps": int(reps), "zfs_reps": int(zreps),
                      "params": dict(files=int(files), big_mb=int(bigmb), percent=int(pct))}
P = lines.append
P(f"# backupd benchmark ({datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, {os.cpu_count()} cpus)")
P("")
P(f"backupd: {prov}")
summary["backupd"] = prov
P("")
P(f"Corpus: `corpus.py make --files {files} --big-mb {bigmb}` -> {make}; `mutate --percent {pct}` -> {mutate}")
P(f"Bytes that actually changed: changed_bytes={changed['changed_bytes']:,} (path-based: renamed files count in full), "
  f"changed_bytes_min={changed['changed_bytes_min']:,} (4 KiB blocks, moves free), "
  f"changed_bytes_rec={changed['changed_bytes_rec']:,} (ZFS 128 KiB logical records, moves free); {changed}")
P("")
P(f"Load average at the end: {load}. Fidelity checks (`rsync -anciHX --delete` source vs final backup, .rackvault/ "
  "excluded; control: rsync --link-dest tree with -anci; differences listed in the logs dir): " + (", ".join(f"{n}: {c}" for n, c in checks) or "none run"))
summary["checks"] = dict(checks)
P("")
phases = [("full", "full"), ("nochange", "no change"), ("mutate", "after mutate")]
dtools = [("bd-sync", "backupd (sync=true)"), ("bd-nosync", "backupd (sync=false)"), ("cp", "cp -a"),
          ("cp+sync", "cp -a; sync"), ("rsync", "rsync -a"), ("rsync+sync", "rsync -a; sync"),
          ("rsync-ld", "rsync -a --link-dest")]
if any(k[0] == "dir" for k in data):
    P(f"## Directory store: wall seconds, median of {reps} alternating repetitions")
    P("")
    P("| run | " + " | ".join(n for _, n in dtools) + " |")
    P("|---" * (len(dtools) + 1) + "|")
    summary["dir_seconds"] = {}
    for ph, pn in phases:
        P(f"| {pn} | " + " | ".join(fs(med("dir", t, ph)) for t, _ in dtools) + " |")
        summary["dir_seconds"][ph] = {t: med("dir", t, ph) for t, _ in dtools}
    P("")
    P("## Directory store: ratios (median of per-repetition ratios; < 1 means backupd faster)")
    P("")
    P("| ratio | sync=true | sync=false | target | per-rep (sync=true) |")
    P("|---|---|---|---|---|")
    specs = [("full", "cp", "full: backupd / cp -a", 1.2), ("full", "cp+sync", "full: backupd / (cp -a; sync)", None),
             ("full", "rsync", "full: backupd / rsync -a", None),
             ("nochange", "rsync", "no change: backupd / rsync -a", 1.0),
             ("nochange", "rsync-ld", "no change: backupd / rsync --link-dest", None),
             ("mutate", "rsync", "after mutate: backupd / rsync -a", None),
             ("mutate", "rsync-ld", "after mutate: backupd / rsync --link-dest", None)]
    summary["dir_ratios"] = {}
    for ph, other, name, target in specs:
        rs, per = ratio("dir", "bd-sync", other, ph)
        rn, _ = ratio("dir", "bd-nosync", other, ph)
        tgt = "—"
        if target is not None:
            ok = lambda x: "—" if x is None else ("PASS" if x <= target else "FAIL")
            tgt = f"≤ {target}: sync {ok(rs)}, nosync {ok(rn)}"
        P(f"| {name} | {fs(rs, 2)} | {fs(rn, 2)} | {tgt} | {', '.join(f'{x:.2f}' for x in per)} |")
        summary["dir_ratios"][name] = {"sync": rs, "nosync": rn, "target": target}
    P("")
    P("## Directory store: bytes each snapshot costs (medians)")
    P("")
    P("| tool | run | bytes_written (JSON) | du apparent growth | du allocated growth |")
    P("|---|---|---|---|---|")
    summary["dir_bytes"] = []
    for t, n in [("bd-sync", "backupd (sync=true)"), ("bd-nosync", "backupd (sync=false)"), ("cp", "cp -a"),
                 ("rsync", "rsync -a"), ("rsync-ld", "rsync --link-dest")]:
        for ph, pn in phases:
            if (("dir", t, ph)) not in data: continue
            bw, a, l = med("dir", t, ph, "bw"), med("dir", t, ph, "du_app"), med("dir", t, ph, "du_alloc")
            if bw is None and a is None: continue
            P(f"| {n} | {pn} | {fb(bw)} | {fb(a)} | {fb(l)} |")
            summary["dir_bytes"].append(dict(tool=t, phase=ph, bytes_written=bw, du_app=a, du_alloc=l))
    P("")
if any(k[0] == "zfs" for k in data):
    zt = [("backupd", "backupd (zfs store)"), ("rsync", "rsync -a"), ("rsyncip", "rsync -a --inplace --no-whole-file")]
    P(f"## ZFS (zfs-fuse, lzjb, atime=off): median of {zreps} repetition(s)")
    P("")
    P("| run | " + " | ".join(f"{n} s | {n} send" for _, n in zt) + " |")
    P("|---" * (2 * len(zt) + 1) + "|")
    summary["zfs"] = {}
    for ph, pn in phases:
        P(f"| {pn} | " + " | ".join(f"{fs(med('zfs', t, ph))} | {fb(med('zfs', t, ph, 'send'))}" for t, _ in zt) + " |")
        summary["zfs"][ph] = {t: dict(secs=med("zfs", t, ph), send=med("zfs", t, ph, "send")) for t, _ in zt}
    P("")
    cb, cm = changed["changed_bytes"], changed["changed_bytes_min"]
    P("| ZFS ratio | backupd | rsync -a | rsync --inplace --no-whole-file | target |")
    P("|---|---|---|---|---|")
    def rr(t, den):
        s = med("zfs", t, "mutate", "send")
        return None if s is None or not den else s / den
    wp = [med("zfs", t, "mutate", "du_app") for t, _ in zt]   # (du_app column holds the DRR_WRITE payload for zfs rows)
    P("| after-mutate send stream: DRR_WRITE payload (data; rest is metadata) | " + " | ".join(fb(x) for x in wp) + " | |")
    summary["zfs_mutate_write_payload"] = dict(zip([t for t, _ in zt], wp))
    for den, dn in [(cb, "changed_bytes"), (cm, "changed_bytes_min"), (changed["changed_bytes_rec"], "changed_bytes_rec")]:
        v = [rr(t, den) for t, _ in zt]
        P(f"| after-mutate send / {dn} ({den/1e6:.2f} MB) | " + " | ".join(fs(x, 2) for x in v) +
          f" | ≤ 1.3: {'—' if v[0] is None else ('PASS' if v[0] <= 1.3 else 'FAIL')} |")
        summary.setdefault("zfs_ratios", {})[dn] = dict(zip([t for t, _ in zt], v))
    crec = changed["changed_bytes_rec"]
    v = [None if x is None or not crec else x / crec for x in wp]
    P("| after-mutate DRR_WRITE payload / changed_bytes_rec | " + " | ".join(fs(x, 2) for x in v) + " | |")
    summary["zfs_ratios"]["payload/changed_bytes_rec"] = dict(zip([t for t, _ in zt], v))
    P("")
    P("| ZFS time ratio | backupd / rsync -a | backupd / rsync --inplace --no-whole-file |")
    P("|---|---|---|")
    for ph, pn in phases:
        r_, _ = ratio("zfs", "backupd", "rsync", ph)
        ri, _ = ratio("zfs", "backupd", "rsyncip", ph)
        P(f"| {pn} | {fs(r_, 2)} | {fs(ri, 2)} |")
        summary.setdefault("zfs_time_ratios", {})[ph] = dict(rsync=r_, rsyncip=ri)
    P("")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
summary["raw"] = rows
json.dump(summary, open(os.path.splitext(out)[0] + ".json", "w"), indent=1)
print(text)
EOF
rm -rf "${OUT%.md}-logs"; cp -a "$LOGS" "${OUT%.md}-logs"; cp "$RES" "${OUT%.md}-logs/results.tsv"
log "report: $OUT (and $(dirname "$OUT")/$(basename "$OUT" .md).json); raw rows: $RES"
