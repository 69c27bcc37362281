#!/usr/bin/env bash
# Runs every test, installing and starting what the tests need: zfs-fuse and a throwaway pool for the
# stores; a throwaway PostgreSQL server for the postgres provider; tgt and libiscsi for the iSCSI tape
# library; QEMU and a Debian kernel for the SG_IO guest test.
#   scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v zfs-fuse >/dev/null 2>&1 || need_pkgs+=(zfs-fuse)
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
command -v tgtd >/dev/null 2>&1 || need_pkgs+=(tgt)
command -v iscsi-ls >/dev/null 2>&1 || need_pkgs+=(libiscsi-bin)
[ -f /usr/include/iscsi/iscsi.h ] || need_pkgs+=(libiscsi-dev)
# The SG_IO test boots a Debian kernel under QEMU with tgt's LUNs passed through.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs+=(qemu-system-x86)
[ -f /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || need_pkgs+=(qemu-block-extra)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need_pkgs+=(cpio)
command -v depmod >/dev/null 2>&1 || need_pkgs+=(kmod)
command -v sg_raw >/dev/null 2>&1 || need_pkgs+=(sg3-utils)
command -v mtx >/dev/null 2>&1 || need_pkgs+=(mtx)
command -v mt-st >/dev/null 2>&1 || need_pkgs+=(mt-st)
# Consistency providers: btrfs snapshots on a loop-mounted image.
command -v mkfs.btrfs >/dev/null 2>&1 || need_pkgs+=(btrfs-progs)
# The postgres provider dumps from a throwaway server (scripts/pg-test-server.sh); the sqlite
# provider's tests write their databases from another process with the sqlite3 shell.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
# docs/tape-sets.md's restore-by-hand recipe is run as written: zstd, jq and setfattr.
command -v zstd >/dev/null 2>&1 || need_pkgs+=(zstd)
command -v jq >/dev/null 2>&1 || need_pkgs+=(jq)
command -v setfattr >/dev/null 2>&1 || need_pkgs+=(attr)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: missing ${need_pkgs[*]}; run as root or: sudo apt-get install -y ${need_pkgs[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${need_pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the ZFS tests need root (zfs-fuse); run as root" >&2
    exit 1
fi

work=$(mktemp -d /tmp/rackvault-test.XXXXXX)
cleanup() {
    scripts/pg-test-server.sh stop "$work" || true
    scripts/zfs-test-pool.sh stop "$work" || true
    rm -rf "$work"
}
trap cleanup EXIT
pool_env=$(scripts/zfs-test-pool.sh start "$work") || { echo "test.sh: could not start the ZFS test pool" >&2; exit 1; }
eval "$pool_env"
export RACKVAULT_TEST_ZPOOL
echo "test.sh: ZFS pool $RACKVAULT_TEST_ZPOOL ready" >&2
pg_env=$(scripts/pg-test-server.sh start "$work") || { echo "test.sh: could not start the PostgreSQL test server" >&2; exit 1; }
eval "$pg_env"
export RACKVAULT_TEST_PG_HOST RACKVAULT_TEST_PG_PORT RACKVAULT_TEST_PG_USER RACKVAULT_TEST_PG_BIN
echo "test.sh: PostgreSQL ready on $RACKVAULT_TEST_PG_HOST:$RACKVAULT_TEST_PG_PORT" >&2

# The iSCSI transport is optional for a plain build (no libiscsi-dev); the tests insist on it.
export RACKVAULT_REQUIRE_ISCSI=1
cargo test --workspace --locked "$@"
