//! The iSCSI transport against a real SCSI target someone else wrote: tgt's virtual tape library
//! (scripts/tgt-vtl.sh), through libiscsi. Needs root and the Debian packages tgt and libiscsi-dev;
//! when they are missing the tests fail and say so (they never skip).
//!
//! tgt 1.0.85 quirks these tests work around: READ ELEMENT STATUS is asked per element type (type 0
//! returns a corrupt layout) and its last descriptor comes back cut short; variable-block READ(6) with a
//! buffer between 1 and 2 block sizes returns corrupt data, so reads use exactly the block size (or
//! at least twice it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use iscsi::{DEFAULT_INITIATOR, IscsiDevice, IscsiUrl};
use scsi::{DataDir, DeviceType, ScsiError, SenseKey, Status, Transport, TransportError};

const T: Duration = Duration::from_secs(30);
const TARGET: &str = "iqn.2024-01.org.rackvault:vtl";

/// A tgt library on its own port, stopped on drop.
struct Tgt {
    dir: tempfile::TempDir,
    port: u16,
    url: IscsiUrl,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tgt-vtl.sh")
}

fn require_libiscsi() {
    assert!(
        iscsi::supported(),
        "this build of the iscsi crate has no libiscsi: install libiscsi-dev (apt-get install libiscsi-dev) and rebuild"
    );
}

impl Tgt {
    fn start() -> Tgt {
        require_libiscsi();
        for tool in ["tgtd", "tgtadm", "tgtimg"] {
            let found = Command::new("sh")
                .args([
                    "-c",
                    &format!("PATH=\"$PATH:/usr/sbin:/sbin\" command -v {tool}"),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{tool} not found: the tgt tests need the Debian package tgt (apt-get install tgt)"
            );
        }
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the tgt tests need root (tgtd)"
        );

        let dir = tempfile::Builder::new()
            .prefix("rackvault-tgt")
            .tempdir()
            .expect("temp dir");
        // A port of our own: test binaries, and tests within one, run in parallel. Each start in this
        // process takes the next block of ports from a per-process base; the script refuses a port in
        // use, and then the next one is tried.
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let base = 3300 + (std::process::id() % 300) as u16 * 20;
        let mut last_err = String::new();
        for _ in 0..8 {
            let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 400;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let out = Command::new("bash")
                .arg(script())
                .args(["start", dir.path().to_str().unwrap(), &port.to_string()])
                .output()
                .expect("run scripts/tgt-vtl.sh");
            if out.status.success() {
                let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert_eq!(url, format!("iscsi://127.0.0.1:{port}/{TARGET}"));
                let url: IscsiUrl = format!("{url}/3").parse().unwrap();
                return Tgt { dir, port, url };
            }
            last_err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !last_err.contains("already in use") {
                break;
            }
        }
        panic!("scripts/tgt-vtl.sh start failed:\n{last_err}");
    }

    /// A logged-in session to `lun`, past the unit attention (29/00 power on or reset) that every new
    /// session gets first.
    fn lun(&self, lun: u16) -> IscsiDevice {
        let mut dev = IscsiDevice::connect(&self.url.with_lun(lun), DEFAULT_INITIATOR)
            .unwrap_or_else(|e| panic!("connect LUN {lun}: {e}"));
        let saw = unit_attentions(&mut dev);
        assert_eq!(
            saw.first().map(|s| (s.key, s.asc)),
            Some((SenseKey::UnitAttention, 0x29)),
            "{saw:?}"
        );
        dev
    }

    fn operator(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tgt-vtl.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// One element of a READ ELEMENT STATUS answer.
#[derive(Debug, PartialEq)]
struct Element {
    address: u16,
    full: bool,
    barcode: String,
}

/// READ ELEMENT STATUS of one element type with primary volume tags.
fn read_elements(dev: &mut IscsiDevice, element_type: u8, start: u16, count: u16) -> Vec<Element> {
    let mut buf = vec![0u8; 4096];
    let [sh, sl] = start.to_be_bytes();
    let [ch, cl] = count.to_be_bytes();
    let alloc = (buf.len() as u32).to_be_bytes();
    let cdb = [
        0xb8,
        0x10 | element_type,
        sh,
        sl,
        ch,
        cl,
        0,
        alloc[1],
        alloc[2],
        alloc[3],
        0,
        0,
    ];
    let n = scsi::execute(dev, &cdb, DataDir::In(&mut buf), T).expect("READ ELEMENT STATUS");
    parse_elements(&buf[..n])
}

/// Tolerant decoder: tgt's byte count is 8 short, so the last descriptor may stop after the volume tag.
fn parse_elements(b: &[u8]) -> Vec<Element> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= b.len() {
        let pvoltag = b[at + 1] & 0x80 != 0;
        let desc_len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let page_bytes = u32::from_be_bytes([0, b[at + 5], b[at + 6], b[at + 7]]) as usize;
        let page_end = (at + 8 + page_bytes + 8).min(b.len());
        let mut d = at + 8;
        while desc_len > 0 && d + 12 <= page_end {
            let desc = &b[d..(d + desc_len).min(page_end)];
            let barcode = if pvoltag && desc.len() >= 44 {
                String::from_utf8_lossy(&desc[12..44])
                    .trim_matches([' ', '\0'])
                    .to_string()
            } else {
                String::new()
            };
            out.push(Element {
                address: u16::from_be_bytes([desc[0], desc[1]]),
                full: desc[2] & 1 != 0,
                barcode,
            });
            d += desc_len;
        }
        at = page_end.max(at + 8);
        if page_bytes == 0 {
            break;
        }
    }
    out
}

/// TEST UNIT READY while it reports UNIT ATTENTION; returns those unit attentions.
fn unit_attentions(dev: &mut IscsiDevice) -> Vec<scsi::Sense> {
    let mut seen = Vec::new();
    loop {
        match scsi::inquiry::test_unit_ready(dev) {
            Err(ScsiError::Sense { sense, .. }) if sense.key == SenseKey::UnitAttention => {
                seen.push(sense)
            }
            Ok(()) | Err(ScsiError::Sense { .. }) => return seen,
            Err(e) => panic!("TEST UNIT READY: {e}"),
        }
        assert!(
            seen.len() < 10,
            "{}: endless unit attentions: {seen:?}",
            dev.describe()
        );
    }
}

fn move_medium(dev: &mut IscsiDevice, from: u16, to: u16) -> Result<usize, ScsiError> {
    let [fh, fl] = from.to_be_bytes();
    let [th, tl] = to.to_be_bytes();
    scsi::execute(
        dev,
        &[0xa5, 0, 0, 1, fh, fl, th, tl, 0, 0, 0, 0],
        DataDir::None,
        T,
    )
}

fn record(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write6(dev: &mut IscsiDevice, data: &[u8]) {
    let l = (data.len() as u32).to_be_bytes();
    let n = scsi::execute(dev, &[0x0a, 0, l[1], l[2], l[3], 0], DataDir::Out(data), T)
        .expect("WRITE(6)");
    assert_eq!(n, data.len());
}

/// Variable-block READ(6) of `len` bytes; returns the raw completion (the caller checks sense).
fn read6(dev: &mut IscsiDevice, buf: &mut [u8]) -> scsi::Completion {
    let l = (buf.len() as u32).to_be_bytes();
    dev.execute(&[0x08, 0, l[1], l[2], l[3], 0], DataDir::In(buf), T)
        .expect("READ(6) transport")
}

#[test]
fn tgt_library_through_libiscsi() {
    let tgt = Tgt::start();
    let mut changer = tgt.lun(3);
    assert_eq!(changer.describe(), tgt.url.to_string());

    // INQUIRY: the drive and the changer as tgt-vtl.sh dressed them.
    let mut drive = tgt.lun(1);
    let inq = scsi::inquiry::inquiry(&mut drive).expect("INQUIRY LUN 1");
    assert_eq!(inq.device_type, DeviceType::Tape);
    assert_eq!(
        (inq.vendor.as_str(), inq.product.as_str()),
        ("IBM", "ULT3580-HH6")
    );
    assert_eq!(
        scsi::inquiry::serial_number(&mut drive).unwrap().as_deref(),
        Some("10WT00001")
    );
    // Without a cartridge: NOT READY, medium not present.
    let err = scsi::inquiry::test_unit_ready(&mut drive).expect_err("TUR of an empty drive");
    assert_eq!(
        err.sense().map(|s| (s.key, s.asc)),
        Some((SenseKey::NotReady, 0x3a)),
        "{err}"
    );
    drop(drive);
    let inq = scsi::inquiry::inquiry(&mut changer).expect("INQUIRY LUN 3");
    assert_eq!(inq.device_type, DeviceType::Changer);
    assert_eq!(
        (inq.vendor.as_str(), inq.product.as_str()),
        ("IBM", "3573-TL")
    );

    // READ ELEMENT STATUS, one element type at a time.
    let picker = read_elements(&mut changer, 1, 0, 0xffff);
    assert_eq!(picker.iter().map(|e| e.address).collect::<Vec<_>>(), [1]);
    let slots = read_elements(&mut changer, 2, 0, 0xffff);
    assert_eq!(slots.len(), 24, "{slots:?}");
    let barcodes: Vec<&str> = slots
        .iter()
        .filter(|e| e.full)
        .map(|e| e.barcode.as_str())
        .collect();
    assert_eq!(
        barcodes,
        [
            "RV0001L6", "RV0002L6", "RV0003L6", "RV0004L6", "RV0005L6", "RV0006L6", "RV0007L6",
            "RV0008L6", "CLN001L1"
        ]
    );
    assert_eq!(
        slots[0],
        Element {
            address: 4096,
            full: true,
            barcode: "RV0001L6".into()
        }
    );
    let ie = read_elements(&mut changer, 3, 0, 0xffff);
    assert_eq!(
        ie.iter().map(|e| (e.address, e.full)).collect::<Vec<_>>(),
        [(16, false), (17, false), (18, false)]
    );
    let drives = read_elements(&mut changer, 4, 0, 0xffff);
    assert_eq!(
        drives
            .iter()
            .map(|e| (e.address, e.full))
            .collect::<Vec<_>>(),
        [(256, false), (257, false)]
    );

    // The operator door (tgt-vtl.sh insert/clear).
    tgt.operator(&["insert", "17", "RV0042L6"]);
    let ie = read_elements(&mut changer, 3, 0, 0xffff);
    assert_eq!(
        ie[1],
        Element {
            address: 17,
            full: true,
            barcode: "RV0042L6".into()
        }
    );
    tgt.operator(&["clear", "17"]);
    assert!(!read_elements(&mut changer, 3, 17, 1)[0].full);

    // Load RV0001L6 into drive 0.
    move_medium(&mut changer, 4096, 256).expect("MOVE MEDIUM 4096 -> 256");
    let drives = read_elements(&mut changer, 4, 256, 2);
    assert!(drives[0].full, "{drives:?}");
    assert!(!read_elements(&mut changer, 2, 4096, 1)[0].full);

    // tgt raises no unit attention (28/00) on the load itself, but a new session starts with one
    // (29/00): `lun` clears it with TEST UNIT READY. Then the drive may need a moment.
    let mut drive = tgt.lun(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = scsi::inquiry::test_unit_ready(&mut drive) {
        assert!(
            Instant::now() < deadline,
            "drive not ready 20 s after the load: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Three variable-length records and a filemark, then one record and a filemark.
    let records = [record(1000, 1), record(2048, 2), record(65536, 3)];
    for r in &records {
        write6(&mut drive, r);
    }
    scsi::execute(&mut drive, &[0x10, 0, 0, 0, 1, 0], DataDir::None, T).expect("WRITE FILEMARKS");
    let last = record(4096, 4);
    write6(&mut drive, &last);
    scsi::execute(&mut drive, &[0x10, 0, 0, 0, 1, 0], DataDir::None, T).expect("WRITE FILEMARKS");
    scsi::execute(&mut drive, &[0x01, 0, 0, 0, 0, 0], DataDir::None, T).expect("REWIND");

    // Read back with exactly-block-size buffers.
    for r in &records {
        let mut buf = vec![0u8; r.len()];
        let c = read6(&mut drive, &mut buf);
        assert_eq!((c.status, c.transferred), (Status::GOOD, r.len()), "{c:?}");
        assert!(
            buf == *r,
            "record of {} bytes read back differently",
            r.len()
        );
    }
    // The filemark: CHECK CONDITION with FM set, nothing transferred.
    let mut buf = vec![0u8; 1000];
    let c = read6(&mut drive, &mut buf);
    assert_eq!(c.status, Status::CHECK_CONDITION);
    let sense = scsi::Sense::decode(&c.sense).expect("filemark sense");
    assert!(sense.filemark, "{sense}");
    assert_eq!(sense.key, SenseKey::NoSense, "{sense}");

    // A short record read with a buffer twice its size: CHECK CONDITION with ILI, and the data must
    // survive (libiscsi puts the sense where read data would go unless the shim gives it a buffer).
    let mut buf = vec![0u8; 2 * last.len()];
    let c = read6(&mut drive, &mut buf);
    let sense = scsi::Sense::decode(&c.sense).unwrap_or_else(|| panic!("ILI sense: {c:?}"));
    assert!(sense.ili, "{sense}");
    assert_eq!(
        sense.information,
        Some(last.len() as i64),
        "residue = requested - actual: {sense}"
    );
    assert!(
        buf[..last.len()] == last[..],
        "data of an ILI read was lost"
    );

    // MOVE MEDIUM from the now empty slot: ILLEGAL REQUEST, medium source element empty.
    let err = move_medium(&mut changer, 4096, 257).expect_err("MOVE from an empty slot");
    let sense = err.sense().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        (sense.key, sense.asc, sense.ascq),
        (SenseKey::IllegalRequest, 0x3b, 0x0e),
        "{sense}"
    );
    assert!(err.to_string().contains("MOVE MEDIUM"), "{err}");

    // Unload back to its slot.
    move_medium(&mut changer, 256, 4096).expect("MOVE MEDIUM 256 -> 4096");
    assert!(read_elements(&mut changer, 2, 4096, 1)[0].full);
}

#[test]
fn bad_cdb_is_refused_and_session_survives() {
    let tgt = Tgt::start();
    let mut changer = tgt.lun(3);
    let e = changer.execute(&[], DataDir::None, T).unwrap_err();
    assert!(e.to_string().contains("CDB length 0"), "{e}");
    let e = changer.execute(&[0; 17], DataDir::None, T).unwrap_err();
    assert!(e.to_string().contains("CDB length 17"), "{e}");
    // An unsupported opcode is the target's ILLEGAL REQUEST, not a transport error.
    let c = changer
        .execute(&[0xff, 0, 0, 0, 0, 0], DataDir::None, T)
        .unwrap();
    assert_eq!(c.status, Status::CHECK_CONDITION);
    assert_eq!(
        scsi::Sense::decode(&c.sense).unwrap().key,
        SenseKey::IllegalRequest
    );
    scsi::inquiry::inquiry(&mut changer).expect("INQUIRY after errors");
}

#[test]
fn login_errors_are_clear_and_bounded() {
    require_libiscsi();
    // Nothing listens: refused at once.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let url: IscsiUrl = format!("iscsi://127.0.0.1:{port}/{TARGET}/1")
        .parse()
        .unwrap();
    let e = IscsiDevice::connect(&url, DEFAULT_INITIATOR)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("iSCSI login to 127.0.0.1:{port}")),
        "{e}"
    );

    // A peer that accepts but never answers: the login deadline holds.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url: IscsiUrl = format!(
        "iscsi://127.0.0.1:{}/{TARGET}/1",
        silent.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let t0 = Instant::now();
    let e = IscsiDevice::connect_with_timeout(&url, DEFAULT_INITIATOR, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "login deadline not enforced: {:?}",
        t0.elapsed()
    );
}

#[test]
fn unknown_target_is_a_login_error() {
    let tgt = Tgt::start();
    let url: IscsiUrl = format!(
        "iscsi://127.0.0.1:{}/iqn.2024-01.org.rackvault:nope/0",
        tgt.port
    )
    .parse()
    .unwrap();
    let e = IscsiDevice::connect(&url, DEFAULT_INITIATOR)
        .unwrap_err()
        .to_string();
    assert!(e.contains("login"), "{e}");
}

#[test]
fn command_timeout_drops_the_session_and_the_next_command_logs_in_again() {
    let tgt = Tgt::start();
    let mut changer = tgt.lun(3);
    let pid: i32 = std::fs::read_to_string(tgt.dir.path().join("tgtd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A target that stops answering mid-session.
    // SAFETY: kill has no memory preconditions; pid is the tgtd this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    let r = changer.execute(
        &[0, 0, 0, 0, 0, 0],
        DataDir::None,
        Duration::from_millis(300),
    );
    let elapsed = t0.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    match r {
        Err(TransportError::Timeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(300))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(3),
        "timeout not enforced: {elapsed:?}"
    );

    // The next command logs in again; the new session starts with a unit attention (29/00).
    let saw = unit_attentions(&mut changer);
    assert_eq!(
        saw.first().map(|s| (s.key, s.asc)),
        Some((SenseKey::UnitAttention, 0x29)),
        "{saw:?}"
    );
    assert_eq!(
        scsi::inquiry::inquiry(&mut changer).unwrap().device_type,
        DeviceType::Changer
    );
}

#[test]
fn target_gone_is_an_error_not_a_hang() {
    let tgt = Tgt::start();
    let mut changer = tgt.lun(3);
    let out = Command::new("bash")
        .arg(script())
        .arg("stop")
        .arg(tgt.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    let e = scsi::inquiry::test_unit_ready(&mut changer).expect_err("TUR after tgtd stopped");
    assert!(matches!(e, ScsiError::Transport(_)), "{e}");
    // The next command tries a new login, which is refused.
    let e = scsi::inquiry::test_unit_ready(&mut changer).expect_err("TUR with no target");
    assert!(e.to_string().contains("iSCSI login"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}
