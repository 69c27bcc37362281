#!/usr/bin/env bash
# Runs every test, installing and starting what the tests need (zfs-fuse and a throwaway pool).
#   scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v zfs-fuse >/dev/null 2>&1 || need_pkgs+=(zfs-fuse)
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: missing ${need_pkgs[*]}; run as root or: sudo apt-get install -y ${need_pkgs[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${need_pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the ZFS tests need root (zfs-fuse); run as root" >&2
    exit 1
fi

work=$(mktemp -d /tmp/rackvault-test.XXXXXX)
cleanup() { scripts/zfs-test-pool.sh stop "$work" || true; rm -rf "$work"; }
trap cleanup EXIT
eval "$(scripts/zfs-test-pool.sh start "$work")"
export RACKVAULT_TEST_ZPOOL
echo "test.sh: ZFS pool $RACKVAULT_TEST_ZPOOL ready" >&2

cargo test --workspace --locked "$@"
