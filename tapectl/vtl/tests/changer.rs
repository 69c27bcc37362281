//! Raw-CDB tests of the virtual TS3200 medium changer.

mod common;

use common::*;
use scsi::{SenseKey, Status};
use vtl::{CartridgeOptions, DoorTarget, Fault, Library, VtlError};

fn res(
    ch: &mut dyn scsi::Transport,
    etype: u8,
    voltag: bool,
    start: u16,
    count: u16,
    dvcid: bool,
    alloc: u32,
) -> (scsi::Completion, Vec<u8>) {
    let s = start.to_be_bytes();
    let n = count.to_be_bytes();
    let a = alloc.to_be_bytes();
    run_in(
        ch,
        &[
            0xb8,
            etype | if voltag { 0x10 } else { 0 },
            s[0],
            s[1],
            n[0],
            n[1],
            u8::from(dvcid),
            a[1],
            a[2],
            a[3],
            0,
            0,
        ],
        alloc as usize,
    )
}

/// Parsed element descriptors: (type, address, full, source, volume tag, dvcid identifier).
fn parse(b: &[u8]) -> Vec<(u8, u16, bool, Option<u16>, String, String)> {
    let total = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
    assert_eq!(
        total + 8,
        b.len(),
        "header byte count covers the whole report"
    );
    let mut out = Vec::new();
    let mut at = 8;
    while at < b.len() {
        let t = b[at];
        let pvol = b[at + 1] & 0x80 != 0;
        let dlen = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let bytes = u32::from_be_bytes([0, b[at + 5], b[at + 6], b[at + 7]]) as usize;
        at += 8;
        for d in b[at..at + bytes].chunks_exact(dlen) {
            let addr = u16::from_be_bytes([d[0], d[1]]);
            let full = d[2] & 1 != 0;
            let src = (d[9] & 0x80 != 0).then(|| u16::from_be_bytes([d[10], d[11]]));
            let mut x = 12;
            let tag = if pvol {
                x += 36;
                scsi::be::ascii(&d[12..44])
            } else {
                String::new()
            };
            let idlen = d[x + 3] as usize;
            let id = String::from_utf8_lossy(&d[x + 4..x + 4 + idlen]).to_string();
            out.push((t, addr, full, src, tag, id));
        }
        at += bytes;
    }
    out
}

#[test]
fn inquiry_and_vpd() {
    let (_d, lib) = library(&[]);
    let mut ch = lib.changer();
    let (c, b) = run_in(&mut ch, &[0x12, 0, 0, 0, 96, 0], 96);
    good(&c);
    let inq = scsi::Inquiry::decode(&b).unwrap();
    assert_eq!(inq.device_type, scsi::DeviceType::Changer);
    assert_eq!(&b[8..16], b"IBM     ");
    assert_eq!(inq.product, "3573-TL");
    assert_eq!(inq.revision, "F.11");
    let (c, b) = run_in(&mut ch, &[0x12, 1, 0x80, 0, 255, 0], 255);
    good(&c);
    assert_eq!(
        scsi::inquiry::decode_serial_vpd(&b).as_deref(),
        Some("00L4U78A5813")
    );
    let (c, b) = run_in(&mut ch, &[0x12, 1, 0x00, 0, 255, 0], 255);
    good(&c);
    assert!(b[4..].contains(&0x80) && b[4..].contains(&0x00));
    expect(
        &run_in(&mut ch, &[0x12, 1, 0x99, 0, 255, 0], 255).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    expect(
        &run_in(&mut ch, &[0x12, 0, 0x80, 0, 255, 0], 255).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    expect(
        &run(&mut ch, &[0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        SenseKey::IllegalRequest,
        0x20,
        0,
    );
    good(&run(&mut ch, &[0; 6]));
}

#[test]
fn mode_sense_element_address_assignment() {
    let (_d, lib) = library(&[]);
    let mut ch = lib.changer();
    for cdb in [
        vec![0x1a, 0x08, 0x1d, 0, 255, 0],
        vec![0x5a, 0x08, 0x1d, 0, 0, 0, 0, 0, 255, 0],
    ] {
        let (c, b) = run_in(&mut ch, &cdb, 255);
        good(&c);
        let p = &b[if cdb[0] == 0x1a { 4 } else { 8 }..];
        assert_eq!(p[0], 0x1d);
        let w = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        assert_eq!((w(2), w(4)), (1, 1));
        assert_eq!((w(6), w(8)), (0x1000, 8));
        assert_eq!((w(10), w(12)), (0x10, 2));
        assert_eq!((w(14), w(16)), (0x100, 2));
    }
    let (c, b) = run_in(&mut ch, &[0x1a, 0x08, 0x3f, 0, 255, 0], 255);
    good(&c);
    assert_eq!(b[0] as usize + 1, b.len());
    assert_eq!(&[b[4], b[24], b[28]], &[0x1d, 0x1e, 0x1f]);
    expect(
        &run_in(&mut ch, &[0x1a, 0x08, 0x0f, 0, 255, 0], 255).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
}

#[test]
fn read_element_status_all_types_voltag_and_dvcid() {
    let (_d, lib) = library(&["AAA001L6", "AAA002L6", "CLN001L1"]);
    let mut ch = lib.changer();
    let (c, b) = res(&mut ch, 0, true, 0, 0xffff, false, 0xffff);
    good(&c);
    assert_eq!(
        u16::from_be_bytes([b[0], b[1]]),
        1,
        "first element reported"
    );
    assert_eq!(u16::from_be_bytes([b[2], b[3]]), 1 + 8 + 2 + 2);
    let e = parse(&b);
    assert_eq!(e.len(), 13);
    assert_eq!((e[0].0, e[0].1), (1, 1));
    assert_eq!(
        (e[1].0, e[1].1, e[1].2, e[1].4.as_str()),
        (2, 0x1000, true, "AAA001L6")
    );
    assert_eq!((e[3].1, e[3].4.as_str()), (0x1002, "CLN001L1"));
    assert!(!e[4].2 && e[4].4.is_empty());
    assert_eq!((e[9].0, e[9].1), (3, 0x10));
    assert_eq!((e[11].0, e[11].1), (4, 0x100));
    // Per-type page headers: descriptor lengths with and without the volume tag.
    assert_eq!(b[8], 1);
    assert_eq!(b[9], 0x80);
    assert_eq!(u16::from_be_bytes([b[10], b[11]]), 52);
    let (c, b) = res(&mut ch, 2, false, 0, 0xffff, false, 0xffff);
    good(&c);
    assert_eq!(b[9], 0);
    assert_eq!(u16::from_be_bytes([b[10], b[11]]), 16);
    assert_eq!(parse(&b).len(), 8);

    // Load a tape: the drive shows Full, the volume tag and SValid with the source slot.
    good(&move_medium(&mut ch, 0x1001, 0x101));
    let (c, b) = res(&mut ch, 4, true, 0, 0xffff, true, 0xffff);
    good(&c);
    let e = parse(&b);
    assert_eq!(e.len(), 2);
    assert!(!e[0].2);
    assert_eq!(
        (e[1].1, e[1].2, e[1].3, e[1].4.as_str()),
        (0x101, true, Some(0x1001), "AAA002L6")
    );
    let id = &e[1].5;
    assert_eq!(id.len(), 34);
    assert_eq!(&id[..24], "IBM     ULT3580-HH8     ");
    assert_eq!(&id[24..], lib.drive(1).unwrap().serial());
    assert_ne!(
        lib.drive(0).unwrap().serial(),
        lib.drive(1).unwrap().serial()
    );
    // Code set ASCII, identifier type 1.
    let d = &b[16..16 + 12 + 36 + 4 + 34];
    assert_eq!(u16::from_be_bytes([b[10], b[11]]), 86);
    assert_eq!((d[48] & 0x0f, d[49] & 0x0f, d[51]), (2, 1, 34));

    // Starting address and count select a window; type 0 keeps transport, storage, I/E, drive order.
    let (c, b) = res(&mut ch, 0, true, 0x1006, 3, false, 0xffff);
    good(&c);
    let e = parse(&b);
    assert_eq!(
        e.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![0x1006, 0x1007, 0x10]
    );
    assert_eq!(u16::from_be_bytes([b[0], b[1]]), 0x1006);
    expect(
        &res(&mut ch, 5, false, 0, 1, false, 255).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
}

#[test]
fn dvcid_can_be_refused_like_qualstar() {
    let d = tempfile::tempdir().unwrap();
    let mut s = spec(&["AAA001L6"]);
    s.dvcid_supported = false;
    let lib = Library::create(d.path(), &s).unwrap();
    let mut ch = lib.changer();
    expect(
        &res(&mut ch, 4, false, 0, 0xffff, true, 0xffff).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    good(&res(&mut ch, 4, true, 0, 0xffff, false, 0xffff).0);
}

#[test]
fn allocation_length_truncates_but_header_tells_full_size() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut ch = lib.changer();
    let (c, full) = res(&mut ch, 0, true, 0, 0xffff, false, 0xffff);
    good(&c);
    let (c, b) = res(&mut ch, 0, true, 0, 0xffff, false, 20);
    good(&c);
    assert_eq!(c.transferred, 20);
    assert_eq!(&b[..], &full[..20]);
    assert_eq!(
        u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize + 8,
        full.len()
    );
    // Only 8 bytes: just the header.
    let (c, b) = res(&mut ch, 0, true, 0, 0xffff, false, 8);
    good(&c);
    assert_eq!(b.len(), 8);
}

#[test]
fn move_medium_errors_and_auto_unload() {
    let (_d, lib) = library(&["AAA001L6", "AAA002L6"]);
    let mut ch = lib.changer();
    expect(
        &move_medium(&mut ch, 0x1005, 0x100),
        SenseKey::IllegalRequest,
        0x3b,
        0x0e,
    );
    expect(
        &move_medium(&mut ch, 0x1000, 0x1001),
        SenseKey::IllegalRequest,
        0x3b,
        0x0d,
    );
    expect(
        &move_medium(&mut ch, 0x1000, 0x2000),
        SenseKey::IllegalRequest,
        0x21,
        0x01,
    );
    expect(
        &move_medium(&mut ch, 0x0999, 0x1002),
        SenseKey::IllegalRequest,
        0x21,
        0x01,
    );
    expect(
        &move_medium(&mut ch, 0x1000, 0x0001),
        SenseKey::IllegalRequest,
        0x21,
        0x01,
    );
    let bad_transport = run(&mut ch, &[0xa5, 0, 0, 7, 0x10, 0, 0x10, 2, 0, 0, 0, 0]);
    expect(&bad_transport, SenseKey::IllegalRequest, 0x21, 0x01);

    // Into a drive: loaded and threaded at BOP 0; the drive reports 28/00 once.
    good(&move_medium(&mut ch, 0x1000, 0x100));
    let mut d = lib.drive(0).unwrap();
    expect(&run(&mut d, &[0; 6]), SenseKey::UnitAttention, 0x28, 0x00);
    good(&run(&mut d, &[0; 6]));
    good(&write(&mut d, b"hello"));
    assert_eq!(position(&mut d), (0, 1, 0));
    // Out of the drive while threaded: the library unloads it first.
    good(&move_medium(&mut ch, 0x100, 0x1003));
    expect(&run(&mut d, &[0; 6]), SenseKey::NotReady, 0x3a, 0x00);
    let st = lib.status().unwrap();
    assert_eq!(st.storage[3].barcode.as_deref(), Some("AAA001L6"));
    assert_eq!(st.storage[3].source, Some(0x1000));
    assert!(st.drives[0].barcode.is_none());
    // The record survived and the layout is valid.
    let t = tree(&lib.cartridge_dir("AAA001L6"));
    assert!(t.contains("0_0_R") && t.contains("0_1_E") && !t.contains("0_0_E"));

    // Drive PREVENT MEDIUM REMOVAL blocks the move out.
    good(&move_medium(&mut ch, 0x1003, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    good(&run(&mut d, &[0x1e, 0, 0, 0, 1, 0]));
    expect(
        &move_medium(&mut ch, 0x100, 0x1003),
        SenseKey::IllegalRequest,
        0x53,
        0x02,
    );
    good(&run(&mut d, &[0x1e, 0, 0, 0, 0, 0]));
    good(&move_medium(&mut ch, 0x100, 0x1003));
    good(&run(&mut ch, &[0x07, 0, 0, 0, 0, 0]));
}

#[test]
fn door_events_give_each_handle_one_unit_attention() {
    let (_d, lib) = library(&[]);
    let mut a = lib.changer();
    let mut b = lib.changer();
    assert_eq!(
        lib.insert("NEW001L6", None, &CartridgeOptions::default())
            .unwrap(),
        1
    );
    // INQUIRY and REQUEST SENSE... INQUIRY never gets the UA.
    good(&run_in(&mut a, &[0x12, 0, 0, 0, 36, 0], 36).0);
    expect(&run(&mut a, &[0; 6]), SenseKey::UnitAttention, 0x28, 0x01);
    good(&run(&mut a, &[0; 6]));
    // REQUEST SENSE reports it (and clears it) for the second handle.
    let (c, s) = run_in(&mut b, &[0x03, 0, 0, 0, 252, 0], 252);
    good(&c);
    assert!(
        scsi::Sense::decode(&s)
            .unwrap()
            .is(SenseKey::UnitAttention, 0x28, 0x01)
    );
    good(&run(&mut b, &[0; 6]));
    // A handle made after the event sees nothing.
    let mut c2 = lib.changer();
    good(&run(&mut c2, &[0; 6]));

    let (c, b2) = res(&mut a, 3, true, 0, 0xffff, false, 0xffff);
    good(&c);
    let e = parse(&b2);
    assert_eq!((e[0].4.as_str(), e[0].2), ("NEW001L6", true));
    assert_eq!(b2[16 + 2] & 0x02, 0x02, "ImpExp: placed by the operator");
    assert_eq!(b2[16 + 2] & 0x30, 0x30, "InEnab and ExEnab");
}

#[test]
fn door_insert_remove_offsite_and_prevent() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut ch = lib.changer();
    // Export: move to an I/E slot, the operator removes it.
    good(&move_medium(&mut ch, 0x1000, 0x11));
    assert!(matches!(
        lib.remove(DoorTarget::Barcode("NOPE".into())),
        Err(VtlError::UnknownBarcode(_))
    ));
    assert!(matches!(
        lib.remove(DoorTarget::IeSlot(1)),
        Err(VtlError::IeSlotEmpty(1))
    ));
    assert!(matches!(
        lib.remove(DoorTarget::IeSlot(9)),
        Err(VtlError::NoSuchIeSlot { .. })
    ));
    // PREVENT locks the door.
    good(&run(&mut ch, &[0x1e, 0, 0, 0, 1, 0]));
    assert!(matches!(
        lib.remove(DoorTarget::IeSlot(2)),
        Err(VtlError::DoorLocked)
    ));
    assert!(matches!(
        lib.insert("X", None, &CartridgeOptions::default()),
        Err(VtlError::DoorLocked)
    ));
    assert!(lib.status().unwrap().door_locked);
    good(&run(&mut ch, &[0x1e, 0, 0, 0, 0, 0]));
    assert_eq!(lib.remove(DoorTarget::IeSlot(2)).unwrap(), "AAA001L6");
    let st = lib.status().unwrap();
    assert_eq!(st.offsite, vec!["AAA001L6".to_string()]);
    // It comes back with its data (and the write-protect tab as inserted).
    let opts = CartridgeOptions {
        write_protected: true,
        ..Default::default()
    };
    assert_eq!(lib.insert("AAA001L6", Some(2), &opts).unwrap(), 2);
    assert!(matches!(
        lib.insert("AAA001L6", None, &opts),
        Err(VtlError::BarcodeInLibrary { .. })
    ));
    assert!(matches!(
        lib.insert("BBB001L6", Some(2), &opts),
        Err(VtlError::IeSlotFull(2))
    ));
    assert!(matches!(
        lib.insert("bad/name", None, &opts),
        Err(VtlError::InvalidBarcode { .. })
    ));
    lib.insert("BBB001L6", None, &CartridgeOptions::default())
        .unwrap();
    assert!(matches!(
        lib.insert("CCC001L6", None, &CartridgeOptions::default()),
        Err(VtlError::NoFreeIeSlot)
    ));
    // Only from I/E slots.
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x1000));
    assert!(matches!(
        lib.remove(DoorTarget::Barcode("BBB001L6".into())),
        Err(VtlError::NotInIeSlot { .. })
    ));
}

#[test]
fn changer_unit_attention_fault_and_open_errors() {
    let (d, lib) = library(&[]);
    lib.set_fault(Fault::UnitAttention { drive: None }).unwrap();
    let mut ch = lib.changer();
    expect(&run(&mut ch, &[0; 6]), SenseKey::UnitAttention, 0x29, 0x00);
    assert_eq!(run(&mut ch, &[0; 6]).status, Status::GOOD);
    assert!(matches!(
        Library::open(d.path()),
        Err(VtlError::NotALibrary { .. })
    ));
    assert!(matches!(
        Library::create(lib.dir(), &spec(&[])),
        Err(VtlError::AlreadyExists { .. })
    ));
    assert!(matches!(
        lib.set_fault(Fault::NeedsCleaning { drive: 7 }),
        Err(VtlError::InvalidFault(_))
    ));
    let reopened = Library::open(lib.dir()).unwrap();
    assert_eq!(reopened.drive_count(), 2);
    assert!(matches!(
        reopened.drive(2),
        Err(VtlError::NoSuchDrive { index: 2, count: 2 })
    ));
}

/// Drive serials are the drives' identities (tapectl locks drives by serial): two libraries made
/// from the same spec, changer serial included, have different ones, stable across opens, and the
/// changer reports them. A library.json from before the per-library id keeps the serials it had.
#[test]
fn drive_serials_differ_between_libraries_and_survive_reopening() {
    let (_a, a) = library(&[]);
    let (_b, b) = library(&[]);
    let serials = |l: &Library| -> Vec<String> {
        (0..2)
            .map(|i| l.drive(i).unwrap().serial().to_string())
            .collect()
    };
    let (sa, sb) = (serials(&a), serials(&b));
    assert_eq!(a.spec().unwrap().serial, b.spec().unwrap().serial);
    assert!(sa.iter().all(|s| !sb.contains(s)), "{sa:?} {sb:?}");
    assert!(sa.iter().all(|s| s.len() == 10));
    assert_eq!(serials(&Library::open(a.dir()).unwrap()), sa);
    let st = a.status().unwrap();
    assert_eq!(st.drives[1].serial, sa[1]);

    // An older library.json: no "id"; it still opens, with serials made from the changer serial.
    let path = b.dir().join("library.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(j.as_object_mut().unwrap().remove("id").is_some());
    std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    let old = Library::open(b.dir()).unwrap();
    let spec = old.spec().unwrap();
    assert_eq!(
        serials(&old),
        vec![
            vtl::drive_serial(&spec.serial, 0),
            vtl::drive_serial(&spec.serial, 1)
        ]
    );
}
