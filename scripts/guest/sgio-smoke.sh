# Guest script for scripts/qemu-sgio.sh (run with sh -e): the real SG_IO path against tgt's library
# passed through as LUNs 1 (drive) and 3 (changer). Proves the guest sees the devices and that raw
# CDBs, mtx (changer) and mt-st/dd (tape) work.

# The node of the first scsi_generic device of SCSI peripheral type $1.
sg_of_type() {
    for d in /sys/class/scsi_generic/sg*; do
        [ "$(cat "$d/device/type")" = "$1" ] && { echo "/dev/$(basename "$d")"; return; }
    done
    echo "no SCSI device of type $1" >&2
    return 1
}
TAPE=$(sg_of_type 1)
CHANGER=$(sg_of_type 8)
echo "tape $TAPE, changer $CHANGER"

echo "--- sg_inq $TAPE"
sg_inq "$TAPE" | grep -E 'Peripheral device type|Vendor identification|Product identification|Unit serial'
sg_inq "$TAPE" | grep -q 'ULT3580-HH6'
sg_inq "$CHANGER" | grep -q 'medium changer'

echo "--- READ ELEMENT STATUS, storage slots with volume tags (sg_raw b8)"
# B8h, VolTag + type 2, start 0, 24 elements, 4 KiB allocation.
sg_raw -r 4096 -o /tmp/res.bin "$CHANGER" b8 12 00 00 00 18 00 00 10 00 00 00
# Barcodes sit at offset 12 of each 52-byte descriptor: check the first one.
dd if=/tmp/res.bin bs=1 skip=28 count=8 2>/dev/null >/tmp/barcode
echo "first slot barcode: $(cat /tmp/barcode)"
[ "$(cat /tmp/barcode)" = RV0001L6 ]

echo "--- mtx -f /dev/sch0 status"
mtx -f /dev/sch0 status | tee /tmp/mtx.txt | head -8
grep -q 'VolumeTag *= *RV0001L6' /tmp/mtx.txt
grep -q 'IMPORT/EXPORT' /tmp/mtx.txt

echo "--- load slot 1 into drive 0, write and read back through /dev/nst0"
mtx -f /dev/sch0 load 1 0
# A fresh load: the first commands may see UNIT ATTENTION; mt-st status retries it away.
mt-st -f /dev/nst0 status >/dev/null 2>&1 || true
mt-st -f /dev/nst0 status | head -3
mt-st -f /dev/nst0 rewind
dd if=/dev/urandom of=/tmp/blk bs=65536 count=4 2>/dev/null
dd if=/tmp/blk of=/dev/nst0 bs=65536 2>/dev/null
mt-st -f /dev/nst0 weof 1
mt-st -f /dev/nst0 rewind
dd if=/dev/nst0 of=/tmp/back bs=65536 2>/dev/null
cmp /tmp/blk /tmp/back
echo "tape data verified"
mt-st -f /dev/nst0 offline || true
mtx -f /dev/sch0 unload 1 0

echo "--- MOVE MEDIUM from an empty slot (expect ILLEGAL REQUEST 3B/0E)"
if sg_raw "$CHANGER" a5 00 00 01 10 17 01 00 00 00 00 00 >/tmp/move.txt 2>&1; then
    echo "MOVE from an empty slot succeeded" >&2
    exit 1
fi
cat /tmp/move.txt
grep -qi 'source element empty' /tmp/move.txt
echo "sgio smoke: OK"
