//! Random CDBs and parameter data thrown at the changer and a drive with a cartridge loaded: no panic,
//! and every answer is a well-formed completion (GOOD, or CHECK CONDITION with decodable sense).

mod common;

use common::*;
use proptest::prelude::*;
use scsi::{DataDir, Sense, Status, Transport};

const OPCODES: &[u8] = &[
    0x00, 0x01, 0x03, 0x04, 0x05, 0x07, 0x08, 0x0a, 0x10, 0x11, 0x12, 0x15, 0x19, 0x1a, 0x1b, 0x1e,
    0x2b, 0x34, 0x44, 0x4d, 0x55, 0x5a, 0x8c, 0x8d, 0x91, 0x92, 0xa0, 0xa5, 0xb8,
];

#[derive(Debug, Clone)]
enum Dir {
    None,
    In(usize),
    Out(Vec<u8>),
}

fn command() -> impl Strategy<Value = (Vec<u8>, Dir)> {
    let op = prop_oneof![3 => proptest::sample::select(OPCODES), 1 => any::<u8>()];
    let rest = proptest::collection::vec(any::<u8>(), 0..20);
    let dir = prop_oneof![
        Just(Dir::None),
        (0usize..70_000).prop_map(Dir::In),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Dir::Out),
    ];
    (op, rest, dir).prop_map(|(op, mut rest, dir)| {
        rest.insert(0, op);
        (rest, dir)
    })
}

fn check(t: &mut dyn Transport, cdb: &[u8], dir: &Dir) {
    let r = match dir {
        Dir::None => t.execute(cdb, DataDir::None, T),
        Dir::In(n) => {
            let mut buf = vec![0u8; *n];
            let r = t.execute(cdb, DataDir::In(&mut buf), T);
            if let Ok(c) = &r {
                assert!(c.transferred <= *n, "transferred more than the buffer");
            }
            r
        }
        Dir::Out(b) => t.execute(cdb, DataDir::Out(b), T),
    };
    let c = r.expect("the virtual library never fails at transport level");
    match c.status {
        Status::GOOD => assert!(c.sense.is_empty()),
        Status::CHECK_CONDITION => {
            assert!(
                Sense::decode(&c.sense).is_some(),
                "undecodable sense {:02x?}",
                c.sense
            );
        }
        s => panic!("unexpected status {s:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn changer_survives_random_cdbs(cmds in proptest::collection::vec(command(), 1..12)) {
        let (_d, lib) = library(&["AAA001L6", "AAA002L6", "CLN001L1"]);
        let mut ch = lib.changer();
        for (cdb, dir) in &cmds {
            check(&mut ch, cdb, dir);
        }
        // The library is still usable and consistent.
        let st = lib.status().unwrap();
        let mut seen: Vec<String> = st.storage.iter().chain(st.ie.iter()).filter_map(|s| s.barcode.clone()).collect();
        seen.extend(st.drives.iter().filter_map(|d| d.barcode.clone()));
        seen.sort();
        prop_assert_eq!(seen, vec!["AAA001L6".to_string(), "AAA002L6".into(), "CLN001L1".into()]);
    }

    #[test]
    fn drive_survives_random_cdbs(cmds in proptest::collection::vec(command(), 1..12)) {
        let (_d, lib) = library(&["AAA001L6"]);
        let mut d = load(&lib, 1, 0);
        good(&write(&mut d, b"first record"));
        good(&wfm(&mut d, 1));
        good(&write(&mut d, b"second"));
        for (cdb, dir) in &cmds {
            check(&mut d, cdb, dir);
        }
        drop(d);
        // Whatever happened, each partition has exactly one EOD marker, after its last record.
        let dir = lib.cartridge_dir("AAA001L6");
        let t = tree(&dir);
        for p in 0..4 {
            let e: Vec<&String> = t.iter().filter(|n| n.starts_with(&format!("{p}_")) && n.ends_with("_E")).collect();
            let objects = t.iter().filter(|n| n.starts_with(&format!("{p}_")) && !n.ends_with("_E")).count();
            if p == 0 {
                prop_assert_eq!(e.len(), 1);
            }
            if let Some(e) = e.first() {
                prop_assert_eq!(e.as_str(), format!("{p}_{objects}_E"));
            }
        }
    }
}
