#!/usr/bin/env bash
# A tgt virtual tape library on 127.0.0.1, laid out like a small IBM TS3200:
#   LUN 1, 2  IBM ULT3580-HH6 LTO drives (serials 10WT00001, 10WT00002), element addresses 256, 257
#   LUN 3     IBM 3573-TL medium changer (serial 00L4U78A1234)
#   3 import/export slots at 16..18, 24 storage slots at 4096..4119 holding RV0001L6..RV0008L6 and CLN001L1
#
# Usage:
#   tgt-vtl.sh start DIR [PORT]            start tgtd on 127.0.0.1:PORT (default 3260), tapes under DIR;
#                                          prints the iSCSI URL of the target on stdout
#   tgt-vtl.sh stop DIR                    stop the tgtd started for DIR
#   tgt-vtl.sh insert DIR PORT ADDR BARCODE  operator puts a cartridge into I/E slot ADDR (16..18)
#   tgt-vtl.sh clear DIR PORT ADDR           operator takes the cartridge out of I/E slot ADDR
# Environment: TGT_TAPE_MB (256) is the size of each data cartridge created.
#
# Every PORT gets its own tgtd control socket (-C PORT), so several libraries can run side by side.
# Needs root and the Debian package `tgt` (libiscsi-bin to look at it: iscsi-ls -s iscsi://127.0.0.1:PORT).
# tgt 1.0.85 limits: no LOCATE, READ POSITION returns zeros, no MAM or partitions; READ ELEMENT STATUS
# must be asked per element type (type 0 returns a corrupt layout) and cuts the last descriptor short.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "tgt-vtl.sh: $*" >&2; exit 1; }
usage() {
    echo "usage: $0 start DIR [PORT] | stop DIR | insert DIR PORT ADDR BARCODE | clear DIR PORT ADDR" >&2
    exit 2
}

TARGET=iqn.2024-01.org.rackvault:vtl
CHANGER_LUN=3

cmd=${1:-}
[ -n "$cmd" ] && [ -n "${2:-}" ] || usage
V=$(realpath -m "$2")

need_tools() {
    local missing=()
    for t in tgtd tgtadm tgtimg; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: install the Debian package tgt (apt-get install tgt)"
    [ "$(id -u)" -eq 0 ] || die "tgtd needs root"
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || die "bad port '$1'"
}

# The pid in DIR/tgtd.pid if that process is still a tgtd (a pid file can outlive its process and the
# pid can be reused).
running_pid() {
    local pid
    [ -f "$V/tgtd.pid" ] || return 1
    pid=$(cat "$V/tgtd.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tgtd ] || return 1
    # A zombie (exited, not yet reaped) is not running.
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    echo "$pid"
}

# Waits up to N × 50 ms for $pid to exit.
gone() {
    for _ in $(seq "$1"); do
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)" = Z ] && return 0
        sleep 0.05
    done
    return 1
}

tgt() { tgtadm -C "$CTL" --lld iscsi "$@"; }
changer() { tgt --mode logicalunit --op update --tid 1 --lun $CHANGER_LUN --params "$1"; }

# Creates the cartridge file for BARCODE if missing (the changer loads media_home/<barcode>, so the file
# name must equal the barcode).
cartridge() {
    local b=$1 type=${2:-data} size=${3:-${TGT_TAPE_MB:-256}}
    [ -f "$V/$b" ] && return 0
    tgtimg --op new --device-type tape --barcode "$b" --size "$size" --type "$type" \
        --file "$V/$b" --thin-provisioning >/dev/null || die "tgtimg could not create cartridge $b in $V"
}

start() {
    local port=${1:-3260}
    check_port "$port"
    need_tools
    CTL=$port
    if pid=$(running_pid); then
        die "a tgtd (pid $pid) is already running for $V; run: $0 stop $V"
    fi
    rm -f "$V/tgtd.pid"
    mkdir -p "$V"
    # Refuse a busy port up front: tgtd would otherwise run without a portal and fail only at login.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use"
    fi

    [ -f "$V/smc" ] || dd if=/dev/zero of="$V/smc" bs=1k count=1 status=none
    # Every drive LUN needs a backing store even when empty: a 1 MB "no tape" image, one name per drive.
    [ -f "$V/notape" ] || tgtimg --op new --device-type tape --barcode "" --size 1 --type clean \
        --file "$V/notape" >/dev/null || die "tgtimg failed in $V"
    for d in 1 2; do ln -sfn notape "$V/notape$d"; done
    local slots=()
    for i in $(seq 1 8); do
        slots+=("$(printf 'RV%04dL6' "$i")")
        cartridge "${slots[-1]}"
    done
    cartridge CLN001L1 clean 1

    # stdin from /dev/null and output to a file: the caller may be waiting for our stdout to close.
    tgtd -C "$CTL" -f --iscsi portal="127.0.0.1:$port" </dev/null >"$V/tgtd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$V/tgtd.pid"
    echo "$port" >"$V/port"

    # Ready when the control socket answers and the portal accepts connections.
    local ok=
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { cat "$V/tgtd.log" >&2; rm -f "$V/tgtd.pid"; die "tgtd exited at start"; }
        if tgtadm -C "$CTL" --op show --mode system >/dev/null 2>&1 &&
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.05
    done
    [ -n "$ok" ] || { cat "$V/tgtd.log" >&2; stop_tgtd; die "tgtd did not get ready on 127.0.0.1:$port in 5 s"; }
    # tgtd keeps running when it cannot bind its portal (and the probe above may have reached someone
    # else's listener): its log is the only sign.
    if grep -q "failed to create/bind to portal" "$V/tgtd.log"; then
        stop_tgtd
        die "127.0.0.1:$port is already in use (tgtd could not bind it)"
    fi

    # From here on any failure leaves a half-built library: stop tgtd before reporting it.
    trap 'stop_tgtd; die "setting up the library failed (see $V/tgtd.log)"' ERR

    tgt --op new --mode target --tid 1 -T $TARGET
    for d in 1 2; do
        tgt --mode logicalunit --op new --tid 1 --lun $d -b "$V/notape$d" --device-type=tape
        tgt --mode logicalunit --op update --tid 1 --lun $d \
            --params vendor_id=IBM,product_id=ULT3580-HH6,product_rev=J451,scsi_sn=10WT0000$d,removable=1
        # Offline until the changer loads a cartridge into it.
        tgt --mode logicalunit --op update --tid 1 --lun $d --params online=0
    done
    tgt --mode logicalunit --op new --tid 1 --lun $CHANGER_LUN -b "$V/smc" --device-type=changer
    changer vendor_id=IBM,product_id=3573-TL,product_rev=F.11,scsi_sn=00L4U78A1234,removable=1
    changer media_home="$V"
    changer element_type=1,start_address=1,quantity=1            # medium transport (picker)
    changer element_type=4,start_address=256,quantity=2          # data transfer (drives)
    changer element_type=4,address=256,tid=1,lun=1
    changer element_type=4,address=257,tid=1,lun=2
    changer element_type=3,start_address=16,quantity=3           # import/export (mail slots)
    changer element_type=2,start_address=4096,quantity=24        # storage
    local addr=4096
    for b in "${slots[@]}" CLN001L1; do
        changer element_type=2,address=$addr,barcode=$b,sides=1
        addr=$((addr + 1))
    done
    tgt --op bind --mode target --tid 1 -I ALL
    trap - ERR
    echo "iscsi://127.0.0.1:$port/$TARGET"
    echo "tgt-vtl.sh: tgtd pid $pid on 127.0.0.1:$port (drives LUN 1,2; changer LUN $CHANGER_LUN)" >&2
}

# Stops the tgtd of $V: delete the target (tgtd ignores SIGTERM while targets exist), ask it to exit,
# then signals as a last resort.
stop_tgtd() {
    local pid
    pid=$(running_pid) || { rm -f "$V/tgtd.pid"; return 0; }
    tgtadm -C "$CTL" --lld iscsi --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
    tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1 || true
    gone 40 || { kill -TERM "$pid" 2>/dev/null; gone 20; } || { kill -KILL "$pid" 2>/dev/null; gone 20; } ||
        echo "tgt-vtl.sh: tgtd pid $pid did not exit" >&2
    rm -f "$V/tgtd.pid"
}

case "$cmd" in
start)
    start "${3:-3260}"
    ;;
stop)
    # The control port is the PORT given at start, remembered in DIR/port.
    CTL=$(cat "$V/port" 2>/dev/null || echo 3260)
    stop_tgtd
    ;;
insert)
    [ $# -eq 5 ] || usage
    check_port "$3"; CTL=$3
    need_tools
    running_pid >/dev/null || die "no tgtd running for $V"
    cartridge "$5"
    changer "element_type=3,address=$4,barcode=$5,sides=1"
    ;;
clear)
    [ $# -eq 4 ] || usage
    check_port "$3"; CTL=$3
    need_tools
    running_pid >/dev/null || die "no tgtd running for $V"
    changer "element_type=3,address=$4,clear_slot=1"
    ;;
*)
    usage
    ;;
esac
