#!/usr/bin/env bash
# Runs a shell script inside a small Debian-kernel QEMU guest (TCG: KVM does not work here) that sees
# iSCSI LUNs (e.g. tgt's tape library from scripts/tgt-vtl.sh) as real SCSI devices: QEMU is the iSCSI
# initiator and passes each LUN through as scsi-generic on a virtio-scsi HBA, so the guest kernel's sg,
# st and ch drivers and the SG_IO ioctl are the real ones (/dev/sg*, /dev/nst*, /dev/sch*).
#
# Usage:
#   scripts/qemu-sgio.sh --iscsi-url iscsi://127.0.0.1:PORT/TARGET-IQN --luns 1,3 --script GUEST_SH
#                        --out LOGFILE [--bin PATH]... [--file HOSTFILE:GUESTPATH]... [--cache DIR]
#                        [--timeout SECONDS] [--mem MB]
#
#   --bin PATH      a program to run in the guest: copied to /bin/<name> with its shared libraries
#                   (dynamically linked glibc programs work: the loader and the libs from ldd come along)
#   --file H:G      a host file copied to guest path G
#   --script SH     run in the guest as `sh -e SH` (cwd /root) after the devices appear
#   --out LOG       the serial console: device listing, the script's output, a final GUEST-EXIT-CODE=<rc>
#   --cache DIR     kernel and base initrd cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/rackvault/qemu)
#   --timeout S     whole run limit (default 180)
#
# Exit status: the guest script's exit status; 124 when the run timed out; 1 when the guest ended
# without the GUEST-EXIT-CODE marker (it crashed or did not boot: see LOG); 2 for bad usage.
#
# The guest has busybox, sg3-utils (sg_inq sg_raw sg_turs sg_requests sg_vpd), mtx, tapeinfo,
# loaderinfo, mt-st and lsscsi when they are installed on the host; /proc, /sys and /dev (devtmpfs)
# are mounted; /tmp and /etc exist; there is no network.
#
# The first run downloads the Debian 12 kernel package (apt-get download linux-image-6.1.*-amd64) and
# keeps vmlinuz and the needed modules in the cache; later runs only pack the per-run files (--bin,
# --file, --script) and append them to the cached base initrd.
#
# Needs (Debian packages): qemu-system-x86 qemu-block-extra (QEMU's iSCSI driver) busybox-static cpio
# kmod (depmod/modprobe, to resolve module dependencies), and apt (present on Debian). Optional, copied
# into the guest when present: sg3-utils mtx mt-st lsscsi.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

die() { echo "qemu-sgio.sh: $*" >&2; exit 1; }
usage() { sed -n '7,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

url= luns= script= out= cache= timeout_s=180 mem=512
bins=() files=()
while [ $# -gt 0 ]; do
    case "$1" in
    --iscsi-url) url=${2:?}; shift 2 ;;
    --luns) luns=${2:?}; shift 2 ;;
    --bin) bins+=("${2:?}"); shift 2 ;;
    --file) files+=("${2:?}"); shift 2 ;;
    --script) script=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --cache) cache=${2:?}; shift 2 ;;
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "qemu-sgio.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$url" ] && [ -n "$luns" ] && [ -n "$script" ] && [ -n "$out" ] || usage
[[ "$url" =~ ^iscsi://[^/]+/[^/]+$ ]] || die "--iscsi-url wants iscsi://HOST[:PORT]/TARGET-IQN (no LUN), got $url"
[[ "$luns" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--luns wants a comma-separated list of LUN numbers, got $luns"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout wants seconds"
[ -f "$script" ] || die "guest script $script not found"
for b in ${bins[@]+"${bins[@]}"}; do [ -f "$b" ] && [ -x "$b" ] || die "--bin $b is not an executable file"; done
for f in ${files[@]+"${files[@]}"}; do
    [[ "$f" == *:/* ]] || die "--file wants HOSTFILE:/GUEST/PATH, got $f"
    [ -f "${f%%:/*}" ] || die "--file ${f%%:/*} not found"
done

missing=()
for t in qemu-system-x86_64 cpio gzip dpkg-deb depmod modprobe timeout flock; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ -x /bin/busybox ] || missing+=("busybox (busybox-static)")
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}; install: apt-get install --no-install-recommends qemu-system-x86 qemu-block-extra busybox-static cpio kmod"
ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1 ||
    die "QEMU has no iSCSI driver: apt-get install qemu-block-extra"
# busybox must be static: the guest runs it before anything else.
if ldd /bin/busybox >/dev/null 2>&1; then die "/bin/busybox is dynamically linked: apt-get install busybox-static"; fi

cache=${cache:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/rackvault/qemu}
mkdir -p "$cache"
cache=$(realpath "$cache")
work=$(mktemp -d "${TMPDIR:-/tmp}/qemu-sgio.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Guest modules: sg, st and ch on a virtio-scsi HBA (sd_mod is left out: no disks here). Their
# dependencies (scsi_mod, scsi_common, virtio_ring, ...) come from modprobe --show-depends.
MODULES="sg st ch virtio_pci virtio_scsi"
# Host tools copied into the guest when present.
TOOLS="sg_inq sg_raw sg_turs sg_requests sg_vpd lsscsi mtx tapeinfo loaderinfo mt-st"

# --- kernel: vmlinuz plus the module set, once per cache ------------------------------------------
# Layout: $cache/kernel/<package>/{vmlinuz,modules/*.ko,modules/order}; $cache/kernel/current names it.
prepare_kernel() {
    local cur pkg kdir
    cur=$(cat "$cache/kernel/current" 2>/dev/null || true)
    if [ -n "$cur" ] && [ -f "$cache/kernel/$cur/vmlinuz" ] && [ -f "$cache/kernel/$cur/modules/order" ]; then
        KDIR=$cache/kernel/$cur
        return
    fi
    resolve() {
        apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-6\.1\.[0-9a-z.+-]*-amd64\)$/\1/p' | head -1
    }
    pkg=$(resolve)
    if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
        echo "qemu-sgio.sh: apt does not know linux-image-amd64; running apt-get update" >&2
        apt-get update -qq >&2 || true
        pkg=$(resolve)
    fi
    [ -n "$pkg" ] || die "cannot find a Debian 6.1 kernel package (apt-cache depends linux-image-amd64 names none); run apt-get update, or put vmlinuz and modules in $cache/kernel by hand"
    echo "qemu-sgio.sh: downloading $pkg (once; cached in $cache)" >&2
    mkdir -p "$work/deb" && (cd "$work/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
        die "apt-get download $pkg failed"
    local deb root kver
    deb=$(ls "$work"/deb/*.deb)
    root=$work/kroot
    mkdir -p "$root"
    # Only vmlinuz and the driver directories the module set can reach; the rest of the ~400 MB tree
    # is never written.
    # (Checked below rather than by tar's status: tar also fails when a pattern matches nothing.)
    dpkg-deb --fsys-tarfile "$deb" |
        tar -x -C "$root" --wildcards './boot/vmlinuz-*' './lib/modules/*/modules.*' \
            './lib/modules/*/kernel/drivers/scsi/*' './lib/modules/*/kernel/drivers/virtio/*' \
            './lib/modules/*/kernel/lib/*' || true
    kver=$(ls "$root/lib/modules" | head -1)
    [ -n "$kver" ] && [ -f "$root/boot/vmlinuz-$kver" ] || die "no vmlinuz or modules in $deb"
    depmod -b "$root" "$kver" || die "depmod failed on $pkg"
    kdir=$cache/kernel/$pkg
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp/modules"
    cp "$root/boot/vmlinuz-$kver" "$kdir.tmp/vmlinuz"
    # "insmod /path/x.ko" lines in load order, dependencies first; "builtin x" for built-in ones.
    local line path name
    modprobe -a -d "$root" -S "$kver" --show-depends $MODULES >"$work/deps" ||
        die "modprobe --show-depends $MODULES failed for $kver"
    while read -r line; do
        case "$line" in
        insmod\ *)
            path=${line#insmod }; path=${path%% *}
            name=$(basename "$path")
            case "$name" in
            *.ko.xz) xz -dc "$path" >"$kdir.tmp/modules/${name%.xz}"; name=${name%.xz} ;;
            *.ko.zst) zstd -qdc "$path" >"$kdir.tmp/modules/${name%.zst}"; name=${name%.zst} ;;
            *) cp "$path" "$kdir.tmp/modules/$name" ;;
            esac
            grep -qxF "$name" "$kdir.tmp/modules/order" 2>/dev/null || echo "$name" >>"$kdir.tmp/modules/order"
            ;;
        esac
    done <"$work/deps"
    [ -s "$kdir.tmp/modules/order" ] || die "no modules resolved for $MODULES"
    echo "$kver" >"$kdir.tmp/kernel-release"
    rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
    echo "$pkg" >"$cache/kernel/current.tmp" && mv "$cache/kernel/current.tmp" "$cache/kernel/current"
    rm -rf "$root" "$work/deb"
    KDIR=$kdir
}

# --- initrd pieces --------------------------------------------------------------------------------
# Copies a program and the shared libraries ldd names into tree $1 (same paths as on the host).
copy_with_libs() {
    local tree=$1 prog=$2 dest=$3 lib
    install -D -m 0755 "$prog" "$tree$dest"
    # ldd fails on static programs ("not a dynamic executable"): nothing to copy then.
    ldd "$prog" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
        [ -e "$tree$lib" ] || install -D -m 0755 "$(realpath "$lib")" "$tree$lib"
    done
}

# The guest's /init. Loads the modules, waits for the LUNs, shows them, runs /guest.sh.
write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /etc /root /run /dev/pts
echo "=== guest: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s"
while read -r m; do
    insmod "/lib/modules/$m" 2>&1 | sed "s/^/insmod $m: /"
done </lib/modules/order
want=$(sed -n 's/.*rv\.luns=\([0-9]*\).*/\1/p' /proc/cmdline)
# Wait for one sg node per LUN, then for st/ch to claim the tapes and changers.
i=0
while [ "$(ls /dev/sg* 2>/dev/null | wc -l)" -lt "${want:-1}" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
settled() {
    for d in /sys/class/scsi_generic/sg*/device; do
        [ -e "$d" ] || continue
        case "$(cat "$d/type")" in
        1) ls "$d"/scsi_tape/nst* >/dev/null 2>&1 || return 1 ;;
        8) ls -d "$d"/scsi_changer/sch* >/dev/null 2>&1 || return 1 ;;
        esac
    done
}
i=0
while ! settled && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "=== devices (want $want LUNs) at $(cut -d' ' -f1 /proc/uptime) s"
ls -l /dev/sg* /dev/st* /dev/nst* /dev/sch* 2>/dev/null
for d in /sys/class/scsi_generic/sg*; do
    [ -e "$d" ] || continue
    echo "$(basename "$d"): type $(cat "$d/device/type") $(cat "$d/device/vendor") $(cat "$d/device/model") [$(basename "$(readlink "$d/device")")]"
done
echo "=== guest script"
cd /root
sh -e /guest.sh
rc=$?
echo "GUEST-EXIT-CODE=$rc"
sync
poweroff -f
EOF
    chmod 0755 "$1"
}

# Cached base initrd: busybox, modules, host tools, /init. Rebuilt when any input changes.
prepare_base() {
    local stamp tools=() t
    for t in $TOOLS; do command -v "$t" >/dev/null 2>&1 && tools+=("$(command -v "$t")"); done
    write_init "$work/init"
    stamp=$(
        {
            cat "$KDIR/kernel-release" "$KDIR/modules/order" "$work/init"
            stat -c '%n %s %Y' /bin/busybox ${tools[@]+"${tools[@]}"}
        } | sha256sum | cut -c1-16
    )
    BASE=$cache/base-$stamp.cpio.gz
    [ -f "$BASE" ] && return
    local ir=$work/base
    mkdir -p "$ir"/{bin,sbin,etc,proc,sys,dev,tmp,root,run,lib/modules}
    cp /bin/busybox "$ir/bin/busybox"
    for a in $(/bin/busybox --list); do [ -e "$ir/bin/$a" ] || ln -s busybox "$ir/bin/$a"; done
    for t in ${tools[@]+"${tools[@]}"}; do rm -f "$ir/bin/$(basename "$t")"; copy_with_libs "$ir" "$t" "/bin/$(basename "$t")"; done
    cp "$KDIR"/modules/*.ko "$KDIR/modules/order" "$ir/lib/modules/"
    cp "$work/init" "$ir/init"
    echo "root:x:0:0:root:/root:/bin/sh" >"$ir/etc/passwd"
    echo "root:x:0:" >"$ir/etc/group"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$BASE.tmp"
    mv "$BASE.tmp" "$BASE"
    # Older bases are dead weight.
    find "$cache" -maxdepth 1 -name 'base-*.cpio.gz' ! -name "$(basename "$BASE")" -delete
}

# One run's files: --bin programs with their libraries, --file files, the guest script.
build_run_archive() {
    local ir=$work/run b f
    mkdir -p "$ir/bin"
    for b in ${bins[@]+"${bins[@]}"}; do copy_with_libs "$ir" "$b" "/bin/$(basename "$b")"; done
    for f in ${files[@]+"${files[@]}"}; do install -D -m 0644 "${f%%:/*}" "$ir/${f#*:/}"; done
    install -m 0755 "$script" "$ir/guest.sh"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/run.cpio.gz"
}

t0=$(date +%s%N)
(
    flock 9
    prepare_kernel
    prepare_base
    echo "$KDIR" >"$work/kdir"
    echo "$BASE" >"$work/base-path"
) 9>"$cache/lock"
KDIR=$(cat "$work/kdir")
BASE=$(cat "$work/base-path")
build_run_archive
# The kernel unpacks concatenated cpio archives in order; later files win.
cat "$BASE" "$work/run.cpio.gz" >"$work/initrd.gz"

IFS=, read -r -a lun_list <<<"$luns"
devs=()
for l in "${lun_list[@]}"; do
    devs+=(-drive "file=$url/$l,if=none,id=lun$l,format=raw"
        -device "scsi-generic,drive=lun$l,bus=hba.0,scsi-id=$l,lun=0")
done

mkdir -p "$(dirname "$out")"
: >"$out"
echo "qemu-sgio.sh: kernel $(cat "$KDIR/kernel-release"), LUNs $luns of $url; initrd ready in $((($(date +%s%N) - t0) / 1000000)) ms" >&2
set +e
# A unique initiator name per run: a second session with the same name could displace another's.
timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp 1 \
    -nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 rv.luns=${#lun_list[@]}" \
    -iscsi "initiator-name=iqn.2024-01.org.rackvault:qemu-$$" \
    -device virtio-scsi-pci,id=hba "${devs[@]}" \
    </dev/null >>"$out" 2>&1
rc=$?
set -e
if [ $rc -eq 124 ]; then
    echo "qemu-sgio.sh: the guest did not finish within ${timeout_s}s (log: $out)" >&2
    exit 124
fi
marker=$(tr -d '\r' <"$out" | sed -n 's/^GUEST-EXIT-CODE=\([0-9]*\)$/\1/p' | tail -1)
if [ -z "$marker" ]; then
    echo "qemu-sgio.sh: the guest ended without reporting an exit code (qemu rc $rc; log: $out)" >&2
    tail -20 "$out" >&2
    exit 1
fi
exit "$marker"
