//! The SG_IO transport through the Linux kernel: a Debian kernel boots under QEMU (software emulation),
//! tgt's changer and drives are passed through as scsi-generic devices, and tapectl runs inside the guest
//! against /dev/sg* with `transport = "sgio"` and discovery by device type and serial
//! (scripts/qemu-sgio.sh; about 10 s warm, plus a one-time kernel download).

mod support;

use std::process::Command;

use support::{Tgt, repo};

#[test]
fn tapectl_over_sg_io_in_a_guest() {
    let tgt = Tgt::start();
    let work = tgt.dir.path();
    let guest_script = work.join("guest.sh");
    std::fs::write(
        &guest_script,
        r#"
set -e
mkdir -p /etc /tmp/locks
printf '[library]\ntransport = "sgio"\nlock_dir = "/tmp/locks"\n' > /etc/rackvault.toml
export RACKVAULT_CONFIG=/etc/rackvault.toml
tapectl devices
tapectl library status
tapectl --json library status > /tmp/status.json
grep -q '"product": "3573-TL"' /tmp/status.json
tapectl load RV0003L6 --drive 0
i=0; while [ $i -lt 40 ]; do echo "block $i of the guest test ......................................................" ; i=$((i+1)); done > /tmp/data
dd if=/dev/urandom bs=65536 count=8 >> /tmp/data 2>/dev/null
tapectl drive write --drive 0 --block-size 64K /tmp/data
tapectl drive rewind --drive 0
tapectl drive read --drive 0 --block-size 64K --to /tmp/back
cmp /tmp/data /tmp/back
echo "SGIO-DATA-VERIFIED"
tapectl drive status --drive 0
tapectl unload --drive 0
tapectl export RV0004L6
tapectl --json library status > /tmp/after.json
tr -d ' \n' < /tmp/after.json | grep -q '"volume_tag":"RV0004L6"'
echo "SGIO-EXPORT-DONE"
"#,
    )
    .unwrap();
    let log = work.join("guest.log");
    let out = Command::new("bash")
        .arg(repo().join("scripts/qemu-sgio.sh"))
        .args([
            "--iscsi-url",
            &tgt.url,
            "--luns",
            "1,2,3",
            "--bin",
            env!("CARGO_BIN_EXE_tapectl"),
            "--script",
        ])
        .arg(&guest_script)
        .arg("--out")
        .arg(&log)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "guest run failed ({}):\n{}\n--- console ---\n{console}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        console.contains("SGIO-DATA-VERIFIED") && console.contains("SGIO-EXPORT-DONE"),
        "{console}"
    );
    // The guest really used the kernel's sg driver, not a shortcut.
    assert!(console.contains("/dev/sg"), "{console}");
}
