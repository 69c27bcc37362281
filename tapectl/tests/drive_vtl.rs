//! The drive command set against the virtual library: a changer MOVE MEDIUM (raw CDB) puts a cartridge
//! in drive 0, then `Drive` partitions it, writes and reads records and filemarks on both partitions,
//! locates, reads MAM attributes, log pages and status, and meets injected faults (early warning, end of
//! medium, write protect, medium error, unit attention, cleaning).

use std::time::Duration;

use ltfs::mam::{Attribute, AttributeFormat};
use ltfs::{DeviceError, Position, ReadOutcome, TapeDevice, WriteOutcome};
use tapectl::drive::{Drive, StreamEnd};
use vtl::{Fault, Library, ReadOrWrite};

mod support;
use support::{move_medium, vtl_drive_as_is, vtl_with_tape_loaded};

const BARCODE: &str = "RV0001L6";

struct Setup {
    _tmp: tempfile::TempDir,
    lib: Library,
    drive: Drive<vtl::VirtualDrive>,
}

fn setup() -> Setup {
    let (tmp, lib) = vtl_with_tape_loaded(BARCODE, &[]);
    let drive = vtl_drive_as_is(&lib);
    Setup {
        _tmp: tmp,
        lib,
        drive,
    }
}

fn record(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k) as u8).collect()
}

#[test]
fn partition_write_read_locate_and_mam() {
    let Setup {
        _tmp,
        lib,
        mut drive,
    } = setup();
    assert_eq!(drive.inquiry().vendor, "IBM");
    assert!(drive.serial().is_some());
    drive.set_default_modes().unwrap();
    assert!(drive.max_block_size().unwrap() >= 512 * 1024);
    assert_eq!(drive.partition_count().unwrap(), 1);

    drive.format_two_partitions(100).unwrap();
    assert_eq!(drive.partition_count().unwrap(), 2);
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 0
        }
    );

    // Partition 1: three records and a filemark, then two records.
    drive
        .locate(Position {
            partition: 1,
            block: 0,
        })
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            drive.write_block(&record(i, 4096 + i)).unwrap(),
            WriteOutcome::Written
        );
    }
    assert_eq!(drive.write_filemarks(1).unwrap(), WriteOutcome::Written);
    drive.write_block(&record(3, 100)).unwrap();
    drive.write_block(&record(4, 200)).unwrap();
    drive.write_filemarks(0).unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 1,
            block: 6
        }
    );

    // Partition 0: one record.
    drive
        .locate(Position {
            partition: 0,
            block: 0,
        })
        .unwrap();
    drive.write_block(b"index partition").unwrap();
    drive.write_filemarks(1).unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 2
        }
    );

    // Read partition 1 back.
    drive
        .locate(Position {
            partition: 1,
            block: 0,
        })
        .unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..3 {
        assert_eq!(
            drive.read_block(&mut buf).unwrap(),
            ReadOutcome::Data(4096 + i)
        );
        assert_eq!(&buf[..4096 + i], &record(i, 4096 + i)[..]);
    }
    assert_eq!(drive.read_block(&mut buf).unwrap(), ReadOutcome::Filemark);
    assert_eq!(drive.read_block(&mut buf).unwrap(), ReadOutcome::Data(100));
    // A record longer than the buffer.
    let mut small = [0u8; 50];
    match drive.read_block(&mut small).unwrap_err() {
        DeviceError::RecordTooLong { record, buffer } => assert_eq!((record, buffer), (200, 50)),
        other => panic!("{other:?}"),
    }
    assert_eq!(drive.read_block(&mut buf).unwrap(), ReadOutcome::EndOfData);
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 1,
            block: 6
        }
    );

    // EOD, spacing, locate past EOD.
    drive.locate_eod(0).unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 2
        }
    );
    drive.locate_eod(1).unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 1,
            block: 6
        }
    );
    drive.space_filemarks(-1).unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 1,
            block: 3
        }
    );
    drive.rewind().unwrap();
    drive
        .locate(Position {
            partition: 1,
            block: 0,
        })
        .unwrap();
    drive.space_filemarks(1).unwrap();
    assert_eq!(drive.read_block(&mut buf).unwrap(), ReadOutcome::Data(100));
    let e = drive.space_filemarks(2).unwrap_err();
    assert!(
        e.to_string().contains("end of data after 0 of 2 filemarks"),
        "{e}"
    );
    let e = drive
        .locate(Position {
            partition: 1,
            block: 99,
        })
        .unwrap_err();
    assert!(
        matches!(&e, DeviceError::IllegalRequest(s) if s.contains("past the end of data")),
        "{e:?}"
    );
    drive.rewind().unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 0
        }
    );

    // Streams: write a file of records, read it back.
    drive.locate_eod(1).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let w = drive.write_records_from(&data[..], 32 * 1024).unwrap();
    assert_eq!(
        (w.records, w.bytes, w.end),
        (4, 100_000, StreamEnd::EndOfInput)
    );
    drive.write_marks(1).unwrap();
    drive
        .locate(Position {
            partition: 1,
            block: 6,
        })
        .unwrap();
    let mut out = Vec::new();
    let r = drive.read_records_to(&mut out, 64 * 1024).unwrap();
    assert_eq!((r.records, r.end), (4, StreamEnd::Filemark));
    assert_eq!(out, data);

    // MAM: host attributes per partition, missing ones are None.
    assert_eq!(drive.read_attribute(0, 0x0806).unwrap(), None);
    let barcode = Attribute::ascii(0x0806, BARCODE, 32);
    drive.write_attribute(0, &barcode).unwrap();
    assert_eq!(
        drive.read_attribute(0, 0x0806).unwrap().map(|a| a.value),
        Some(barcode.value.clone())
    );
    let coherency = Attribute::new(0x080c, AttributeFormat::Binary, vec![7u8; 70]);
    drive.write_attribute(1, &coherency).unwrap();
    assert_eq!(
        drive.read_attribute(1, 0x080c).unwrap().map(|a| a.value),
        Some(coherency.value)
    );
    assert_eq!(drive.read_attribute(0, 0x080c).unwrap(), None);
    let vcr = drive
        .read_attribute(0, 0x0009)
        .unwrap()
        .expect("volume change reference");
    assert!(vcr.read_only);
    assert!(drive.attribute_ids(0).unwrap().contains(&0x0806));

    // Status: everything the virtual drive answers, no notes.
    let s = drive.status();
    assert!(s.notes.is_empty(), "{:#?}", s.notes);
    assert_eq!(s.barcode.as_deref(), Some(BARCODE));
    assert_eq!(
        (s.medium_present, s.ready, s.partitions),
        (Some(true), true, Some(2))
    );
    assert_eq!(
        (s.density_code, s.medium_generation, s.drive_generation),
        (Some(0x5a), Some(6), Some(6))
    );
    assert_eq!(
        (s.block_length, s.compression, s.write_protected),
        (Some(0), Some(true), Some(false))
    );
    assert_eq!(s.capacity.len(), 2);
    assert!(
        s.capacity
            .iter()
            .all(|c| c.maximum_mib.is_some() && c.remaining_mib.is_some())
    );
    assert!(!s.volume_statistics.is_empty());
    assert_eq!(s.tape_alerts, Some(vec![]));
    assert!(s.quirks.is_empty(), "{:?}", s.quirks);
    serde_json::to_string(&s).unwrap();

    drive.unload().unwrap();
    let e = drive.wait_until_ready(Duration::from_secs(1)).unwrap_err();
    assert!(e.is_no_medium(), "{e}");
    move_medium(
        &mut lib.changer(),
        vtl::FIRST_DRIVE_ADDRESS,
        vtl::FIRST_STORAGE_ADDRESS,
    );
}

#[test]
fn early_warning_then_end_of_medium() {
    let Setup {
        _tmp,
        lib,
        mut drive,
    } = setup();
    drive.set_default_modes().unwrap();
    lib.set_fault(Fault::EarlyWarningAt {
        barcode: BARCODE.into(),
        partition: 0,
        bytes: 40_000,
    })
    .unwrap();
    lib.set_fault(Fault::EndOfMediumAt {
        barcode: BARCODE.into(),
        partition: 0,
        bytes: 70_000,
    })
    .unwrap();
    drive.rewind().unwrap();
    let rec = vec![0x5au8; 10_000];
    let mut outcomes = Vec::new();
    let end = loop {
        match drive.write_block(&rec) {
            Ok(o) => outcomes.push(o),
            Err(e) => break e,
        }
        assert!(outcomes.len() < 20, "no end of medium");
    };
    assert!(matches!(end, DeviceError::EndOfMedium), "{end:?}");
    let first_warning = outcomes
        .iter()
        .position(|o| *o == WriteOutcome::EarlyWarning)
        .expect("early warning");
    assert_eq!(first_warning, 3, "{outcomes:?}");
    assert!(
        outcomes[first_warning..]
            .iter()
            .all(|o| *o == WriteOutcome::EarlyWarning)
    );
    assert_eq!(outcomes.len(), 7);
    assert!(drive.early_warning());
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 7
        }
    );

    // A stream stops at early warning, having written what it counted.
    drive.rewind().unwrap();
    let s = drive
        .write_records_from(&vec![1u8; 100_000][..], 10_000)
        .unwrap();
    assert_eq!((s.records, s.end), (4, StreamEnd::EarlyWarning));
}

#[test]
fn faults_map_to_device_errors() {
    let Setup {
        _tmp,
        lib,
        mut drive,
    } = setup();
    drive.set_default_modes().unwrap();
    drive.rewind().unwrap();
    for i in 0..3 {
        drive.write_block(&record(i, 1000)).unwrap();
    }
    drive.write_filemarks(1).unwrap();

    // Medium error on block 1: named by partition and block.
    lib.set_fault(Fault::MediumError {
        barcode: BARCODE.into(),
        partition: 0,
        block: 1,
        on: ReadOrWrite::Read,
    })
    .unwrap();
    drive.rewind().unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(drive.read_block(&mut buf).unwrap(), ReadOutcome::Data(1000));
    match drive.read_block(&mut buf).unwrap_err() {
        DeviceError::Medium {
            partition,
            block,
            detail,
        } => {
            assert_eq!((partition, block), (0, 1));
            assert!(
                detail.contains("READ(6)") && detail.contains("drive 0"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }

    // TapeAlert from the read failure, and cleaning.
    lib.set_fault(Fault::NeedsCleaning { drive: 0 }).unwrap();
    let t = drive.tape_alerts().unwrap();
    assert!(t.needs_cleaning(), "{:?}", t.flags().collect::<Vec<_>>());
    assert!(t.is_critical());
    lib.clear_faults().unwrap();

    // Unit attention: queries retry it, I/O reports it.
    lib.set_fault(Fault::UnitAttention { drive: Some(0) })
        .unwrap();
    drive.rewind().unwrap();
    assert_eq!(
        drive.position().unwrap(),
        Position {
            partition: 0,
            block: 0
        }
    );
    lib.set_fault(Fault::UnitAttention { drive: Some(0) })
        .unwrap();
    let e = drive.read_block(&mut buf).unwrap_err();
    assert!(e.to_string().contains("position is lost"), "{e}");

    // Write protect.
    lib.set_fault(Fault::WriteProtect {
        barcode: BARCODE.into(),
    })
    .unwrap();
    drive.locate_eod(0).unwrap();
    assert!(matches!(
        drive.write_block(b"nope").unwrap_err(),
        DeviceError::WriteProtected
    ));
    assert_eq!(drive.status().write_protected, Some(true));
    lib.clear_faults().unwrap();

    // Becoming ready, then ready.
    lib.set_fault(Fault::NotReadyFor {
        drive: 0,
        seconds: 1,
    })
    .unwrap();
    drive.wait_until_ready(Duration::from_secs(10)).unwrap();
}

/// The virtual drive reads ahead (keeping the next records open); an overwrite in between must never be
/// served from that window.
#[test]
fn read_ahead_never_serves_overwritten_records() {
    let mut s = setup();
    let d = &mut s.drive;
    for i in 0..24 {
        d.write_block(&record(i, 64 * 1024)).unwrap();
    }
    d.rewind().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..2 {
        assert_eq!(
            d.read_block(&mut buf).unwrap(),
            ReadOutcome::Data(64 * 1024)
        );
        assert_eq!(buf, record(i, 64 * 1024));
    }
    // Overwrite from block 3 while blocks 2..18 sit in the read-ahead window.
    d.locate(Position {
        partition: 0,
        block: 3,
    })
    .unwrap();
    d.write_block(&record(100, 64 * 1024)).unwrap();
    d.locate(Position {
        partition: 0,
        block: 2,
    })
    .unwrap();
    assert_eq!(
        d.read_block(&mut buf).unwrap(),
        ReadOutcome::Data(64 * 1024)
    );
    assert_eq!(buf, record(2, 64 * 1024));
    assert_eq!(
        d.read_block(&mut buf).unwrap(),
        ReadOutcome::Data(64 * 1024)
    );
    assert!(
        buf == record(100, 64 * 1024),
        "block 3 must be the new record"
    );
    assert_eq!(
        d.read_block(&mut buf).unwrap(),
        ReadOutcome::EndOfData,
        "the overwrite ended the data"
    );
}

/// Another handle opened and dropped on a drive while it streams writes (a probe matching serials,
/// a status from elsewhere) must not disturb the stream: it sees a write run in progress, not
/// damage to repair, and every record is there after.
#[test]
fn a_probe_handle_does_not_disturb_a_streaming_writer() {
    let mut s = setup();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let probed = Arc::new(AtomicU32::new(0));
    let probes = {
        let lib = Library::open(s.lib.dir()).unwrap();
        let (stop, probed) = (stop.clone(), probed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(Drive::new(lib.drive(0).unwrap()).unwrap());
                probed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The writes start once a probe has run, and the probes go on until they end.
    while probed.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let d = &mut s.drive;
    for i in 0..400 {
        d.write_block(&record(i, 256 * 1024)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    probes.join().unwrap();
    let n = probed.load(Ordering::Relaxed);
    d.write_filemarks(1).unwrap();
    d.rewind().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    for i in 0..400 {
        assert_eq!(
            d.read_block(&mut buf).unwrap(),
            ReadOutcome::Data(256 * 1024),
            "record {i} ({n} probes)"
        );
        assert!(
            buf == record(i, 256 * 1024),
            "record {i} differs ({n} probes)"
        );
    }
    assert_eq!(d.read_block(&mut buf).unwrap(), ReadOutcome::Filemark);
}
