#!/usr/bin/env bash
# Starts zfs-fuse (unless a ZFS daemon already answers) and creates a throwaway pool of sparse
# files for the tests.   start WORKDIR -> prints "export" lines;   stop WORKDIR
set -euo pipefail
cmd=${1:?usage: zfs-test-pool.sh start|stop WORKDIR}
work=${2:?usage: zfs-test-pool.sh start|stop WORKDIR}
pool_file="$work/pool-name"

case "$cmd" in
start)
    mkdir -p "$work"
    if ! zpool list >/dev/null 2>&1; then
        [ -e /dev/fuse ] || { echo "zfs-test-pool: /dev/fuse is missing; zfs-fuse cannot run here" >&2; exit 1; }
        rm -f "$work/zfs-fuse.pid"   # a stale pidfile makes the daemon exit silently
        zfs-fuse --pidfile "$work/zfs-fuse.pid" --no-kstat-mount
        for _ in $(seq 1 200); do zpool list >/dev/null 2>&1 && break; sleep 0.05; done
        zpool list >/dev/null 2>&1 || { echo "zfs-test-pool: zfs-fuse did not start" >&2; exit 1; }
        echo started >"$work/we-started-zfs-fuse"
    fi
    pool="rvtest$$"
    truncate -s 2G "$work/disk0.img"
    zpool create -f -m "$work/mnt" "$pool" "$work/disk0.img" ||
        { echo "zfs-test-pool: zpool create $pool failed (is a zfs-fuse daemon shutting down? zpool list: $(zpool list -H 2>&1 | head -1))" >&2; exit 1; }
    zfs set atime=off "$pool"
    echo "$pool" >"$pool_file"
    echo "export RACKVAULT_TEST_ZPOOL=$pool"
    ;;
stop)
    if [ -f "$pool_file" ]; then
        pool=$(cat "$pool_file")
        # Temporary read clones may still be unmounting: retry briefly.
        for _ in 1 2 3 4 5; do zpool destroy -f "$pool" 2>/dev/null && break; sleep 0.5; done
        rm -f "$pool_file"
    fi
    if [ -f "$work/we-started-zfs-fuse" ] && [ -f "$work/zfs-fuse.pid" ]; then
        pid=$(cat "$work/zfs-fuse.pid")
        kill "$pid" 2>/dev/null || true
        # Wait for it to go: a following start would otherwise talk to a daemon that is exiting.
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        rm -f "$work/zfs-fuse.pid" "$work/we-started-zfs-fuse"
    fi
    rm -f "$work/disk0.img"
    ;;
*) echo "usage: zfs-test-pool.sh start|stop WORKDIR" >&2; exit 2 ;;
esac
