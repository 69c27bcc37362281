//! `ltfs::volume::Volume` through the real drive command set (`tapectl::drive::Drive`) on the virtual
//! library: format gives the reference file backend's tree (ltfs-format.md §7), format refuses a used
//! tape, puts and unmount give the §1 worked-example layout (checked against §8 writer items), a fresh
//! drive reads everything back byte for byte, the MAM fast path is used when coherent and the full scan
//! when `attr_*` are gone, an interrupted write is found and reported, and early warning ends writing
//! with the index still written.

use std::collections::BTreeSet;
use std::path::Path;

use ltfs::TapeDevice;
use ltfs::coherency::VolumeCoherency;
use ltfs::index::{Entry, FileContent, Index, IndexLocation, Limits, LtfsTime, Times, Xattr};
use ltfs::label;
use ltfs::scan::CurrentIndex;
use ltfs::volume::{EntryKind, FileMeta, FormatOptions, SyncPolicy, Volume, VolumeError};
use tapectl::drive::Drive;
use vtl::{Fault, Library};

mod support;
use support::{vtl_drive, vtl_with_tape_loaded};

const BARCODE: &str = "RV0001L6";
const UUID: &str = "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10";
const BS: usize = 65536;

type Dev = Drive<vtl::VirtualDrive>;

struct Setup {
    _tmp: tempfile::TempDir,
    lib: Library,
}

fn setup(faults: &[Fault]) -> Setup {
    let (tmp, lib) = vtl_with_tape_loaded(BARCODE, faults);
    Setup { _tmp: tmp, lib }
}

/// A fresh `Drive` on the library's first drive (a new handle, nothing cached).
fn drive(lib: &Library) -> Dev {
    vtl_drive(lib)
}

fn opts() -> FormatOptions {
    FormatOptions {
        barcode: Some(BARCODE.into()),
        volume_name: Some("backup-01".into()),
        block_size: BS,
        force: false,
        index_partition_mb: 100,
        uuid: Some(UUID.into()),
    }
}

fn all_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Records (`Some(bytes)`) and filemarks (`None`) of a partition, in order, up to its `_E`.
fn objects(dir: &Path, p: u8) -> Vec<Option<Vec<u8>>> {
    let mut v = Vec::new();
    for b in 0.. {
        let f = |k: char| dir.join(format!("{p}_{b}_{k}"));
        if f('F').exists() {
            v.push(None);
        } else if f('R').exists() {
            v.push(Some(std::fs::read(f('R')).unwrap()));
        } else {
            assert!(f('E').exists(), "partition {p}: gap at block {b}");
            break;
        }
    }
    v
}

/// The index whose first record is at `start` (records up to the next FM).
fn index_at(objs: &[Option<Vec<u8>>], start: usize) -> (Index, usize) {
    let mut xml = Vec::new();
    let mut n = 0;
    while let Some(Some(r)) = objs.get(start + n) {
        xml.extend_from_slice(r);
        n += 1;
        if r.len() < BS {
            break;
        }
    }
    (Index::read_xml(&xml[..], &Limits::default()).unwrap(), n)
}

fn coherency_file(dir: &Path, p: u8) -> VolumeCoherency {
    VolumeCoherency::decode(&std::fs::read(dir.join(format!("attr_{p}_80c"))).unwrap()).unwrap()
}

fn vcr_file(dir: &Path) -> u64 {
    let raw = std::fs::read(dir.join("attr_0_9")).unwrap();
    ltfs::coherency::volume_change_reference(&raw[5..]).unwrap()
}

#[test]
fn format_gives_the_reference_tree_and_refuses_a_used_tape() {
    let s = setup(&[]);
    let mut d = drive(&s.lib);
    let dir = s.lib.cartridge_dir(BARCODE);

    // A tape with any data is refused without force.
    d.rewind().unwrap();
    d.write_block(b"some record").unwrap();
    d.write_filemarks(0).unwrap();
    let e = Volume::format(&mut d, &opts()).err().expect("refused");
    assert!(matches!(e, VolumeError::NotBlank { partition: 0 }), "{e}");

    let mut o = opts();
    o.force = true;
    let vol = Volume::format(&mut d, &o).unwrap();
    assert_eq!(vol.index().generation, 1);
    vol.unmount().unwrap();

    // §7: the tree after mkltfs, file for file.
    let mut want: BTreeSet<String> = BTreeSet::new();
    for p in 0..2 {
        for x in ["0_R", "1_F", "2_R", "3_F", "4_F", "5_R", "6_F", "7_E"] {
            want.insert(format!("{p}_{x}"));
        }
        want.insert(format!("attr_{p}_80c"));
    }
    for a in [
        "9", "800", "801", "802", "803", "805", "806", "808", "80b", "1623",
    ] {
        want.insert(format!("attr_0_{a}"));
    }
    let have: BTreeSet<String> = all_files(&dir)
        .into_iter()
        .filter(|f| f.starts_with("attr_") || f.starts_with("0_") || f.starts_with("1_"))
        .collect();
    assert_eq!(have, want);

    // §2: VOL1 with the serial; §3/§8 item 4: labels equal but for location.
    let vol1 = std::fs::read(dir.join("0_0_R")).unwrap();
    assert_eq!(vol1, label::encode_vol1(Some("RV0001")));
    assert_eq!(std::fs::read(dir.join("1_0_R")).unwrap(), vol1);
    let la = label::Label::parse(&std::fs::read(dir.join("0_2_R")).unwrap()).unwrap();
    let lb = label::Label::parse(&std::fs::read(dir.join("1_2_R")).unwrap()).unwrap();
    assert_eq!((la.location, lb.location), ('a', 'b'));
    label::compare(&la, &lb).unwrap();
    assert_eq!((la.block_size, la.volume_uuid.as_str()), (BS as u32, UUID));

    // §8 item 6: gen-1 indexes at block 5; the IP's points back to b/5.
    let ip = index_at(&objects(&dir, 0), 5).0;
    let dp = index_at(&objects(&dir, 1), 5).0;
    assert_eq!((ip.generation, dp.generation), (1, 1));
    assert_eq!(
        (ip.location, ip.previous),
        (
            IndexLocation {
                partition: 'a',
                start_block: 5
            },
            Some(IndexLocation {
                partition: 'b',
                start_block: 5
            })
        )
    );
    assert_eq!((dp.location.partition, dp.location.start_block), ('b', 5));
    assert_eq!(dp.previous, None);
    assert_eq!(ip.root.name, "backup-01");
    assert_eq!(ip.highest_file_uid, 1);
    assert!(ip.creator.ends_with(" - Format"), "{}", ip.creator);

    // §6: coherency on both partitions with the VCR the drive reports.
    // §7: VCR 2 (1 at load, +1 on the session's first write).
    let vcr = vcr_file(&dir);
    assert_eq!(vcr, 2);
    for p in 0..2 {
        let c = coherency_file(&dir, p);
        assert_eq!((c.vcr, c.count, c.set_id, c.version), (vcr, 1, 5, 1));
        assert_eq!(c.uuid, UUID);
    }
    let bc = std::fs::read(dir.join("attr_0_806")).unwrap();
    assert_eq!(&bc[5..13], BARCODE.as_bytes());

    // An LTFS volume is refused without force, and a fresh drive mounts it on the fast path.
    let e = Volume::format(&mut d, &opts()).err().expect("refused");
    assert!(matches!(e, VolumeError::AlreadyLtfs { .. }), "{e}");
    drop(d);
    let mut d = drive(&s.lib);
    let vol = Volume::mount(&mut d).unwrap();
    assert!(vol.mount_report().fast_path);
    assert!(vol.mount_report().is_consistent());
    assert!(vol.list("/").unwrap().is_empty());
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const BIG: usize = 3 * 1024 * 1024 + 100;

struct Content {
    hello: Vec<u8>,
    big: Vec<u8>,
    odd: Vec<u8>,
    uni: Vec<u8>,
}

fn content() -> Content {
    Content {
        hello: b"hello, tape\n".to_vec(),
        big: pattern(BIG, 7),
        odd: pattern(BS, 9),
        uni: pattern(1000, 11),
    }
}

fn t0() -> Times {
    Times {
        creation: LtfsTime::new(1_700_000_000, 1),
        change: LtfsTime::new(1_700_000_001, 2),
        modify: LtfsTime::new(1_700_000_002, 999_999_999),
        access: LtfsTime::new(1_700_000_003, 0),
        backup: LtfsTime::new(1_700_000_004, 5),
    }
}

/// Format, then the test tree.
fn write_tree(d: &mut Dev, c: &Content) {
    let mut vol = Volume::format(d, &opts()).unwrap();
    let meta = FileMeta {
        times: Some(t0()),
        read_only: true,
        xattrs: vec![
            Xattr {
                key: "user.text".into(),
                value: b"value".to_vec(),
            },
            Xattr {
                key: "user.bin".into(),
                value: vec![0xff, 0x00, 0x1f],
            },
            Xattr {
                key: "user.empty".into(),
                value: Vec::new(),
            },
        ],
    };
    let r = vol.put_file("/hello.txt", &c.hello[..], &meta).unwrap();
    assert_eq!((r.uid, r.length), (2, c.hello.len() as u64));
    let r = vol
        .put_file("dir/big.bin", &c.big[..], &FileMeta::default())
        .unwrap();
    let x = r.extent.unwrap();
    assert_eq!(
        (x.partition, x.start_block, x.byte_count),
        ('b', 8, BIG as u64)
    );
    vol.put_file("dir/exact-block", &c.odd[..], &FileMeta::default())
        .unwrap();
    let r = vol
        .put_file("dir/empty", &b""[..], &FileMeta::default())
        .unwrap();
    assert_eq!((r.length, r.extent), (0, None));
    vol.symlink("dir/link", "big.bin", &FileMeta::default())
        .unwrap();
    // NFD in, NFC on tape.
    vol.put_file("dir/Ü-cafe\u{301} ✓.txt", &c.uni[..], &FileMeta::default())
        .unwrap();
    vol.put_file("a b:c", &b"colon"[..], &FileMeta::default())
        .unwrap();
    vol.mkdir_p("x/y/z").unwrap();
    vol.mkdir_p("x/y").unwrap();
    let e = vol
        .put_file("/hello.txt", &b"again"[..], &FileMeta::default())
        .unwrap_err();
    assert!(matches!(e, VolumeError::AlreadyExists { .. }), "{e}");
    let e = vol
        .put_file("hello.txt/under", &b"x"[..], &FileMeta::default())
        .unwrap_err();
    assert!(matches!(e, VolumeError::NotADirectory { .. }), "{e}");
    assert!(vol.is_dirty());
    vol.unmount().unwrap();
}

fn read(vol: &mut Volume<&mut Dev>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = vol.read_file(path, &mut out).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn check_tree(vol: &mut Volume<&mut Dev>, c: &Content) {
    assert_eq!(read(vol, "hello.txt"), c.hello);
    assert_eq!(read(vol, "/dir/big.bin"), c.big);
    assert_eq!(read(vol, "dir/exact-block"), c.odd);
    assert_eq!(read(vol, "dir/empty"), b"");
    assert_eq!(read(vol, "dir/Ü-café ✓.txt"), c.uni);
    assert_eq!(read(vol, "dir/U\u{308}-café ✓.txt"), c.uni);
    assert_eq!(read(vol, "a b:c"), b"colon");
    let st = vol.stat("hello.txt").unwrap();
    assert_eq!(st.times, t0());
    assert!(st.read_only);
    let xv: Vec<(String, Vec<u8>)> = st.xattrs.into_iter().map(|x| (x.key, x.value)).collect();
    assert_eq!(
        xv,
        vec![
            ("user.text".into(), b"value".to_vec()),
            ("user.bin".into(), vec![0xff, 0x00, 0x1f]),
            ("user.empty".into(), vec![]),
        ]
    );
    assert_eq!(
        vol.stat("dir/link").unwrap().kind,
        EntryKind::Symlink("big.bin".into())
    );
    let names: Vec<String> = vol
        .list("dir")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["big.bin", "exact-block", "empty", "link", "Ü-café ✓.txt"]
    );
    assert_eq!(vol.stat("x/y/z").unwrap().kind, EntryKind::Directory);
    assert!(matches!(
        vol.stat("nope").unwrap_err(),
        VolumeError::NotFound { .. }
    ));
    assert!(matches!(
        vol.read_file("dir", &mut Vec::new()).unwrap_err(),
        VolumeError::IsADirectory { .. }
    ));
}

#[test]
fn write_unmount_layout_remount_read_back() {
    let s = setup(&[]);
    let dir = s.lib.cartridge_dir(BARCODE);
    let c = content();
    {
        let mut d = drive(&s.lib);
        write_tree(&mut d, &c);
    }

    // The §1 worked-example layout.
    let dp = objects(&dir, 1);
    let ip = objects(&dir, 0);
    // §8 item 3: labels; item 6: format index at 5 with FMs at 4 and 6.
    for objs in [&dp, &ip] {
        assert!(objs[0].is_some() && objs[1].is_none() && objs[2].is_some());
        assert!(objs[3].is_none() && objs[4].is_none() && objs[6].is_none());
        assert!(objs.iter().flatten().all(|r| !r.is_empty()), "item 2");
    }
    // Data: big (49 records), exact-block (1), unicode (1), hello (1), colon (1), in put order.
    let big_records = BIG.div_ceil(BS);
    let data_start = 7;
    let n_data = 1 + big_records + 1 + 1 + 1;
    let fm = data_start + n_data;
    for (b, r) in dp.iter().enumerate().take(fm).skip(data_start) {
        assert!(r.is_some(), "item 11: no FM in data (block {b})");
    }
    // Item 11: every record of the big extent is full but the last.
    for r in &dp[8..8 + big_records - 1] {
        assert_eq!(r.as_ref().unwrap().len(), BS);
    }
    assert_eq!(dp[8 + big_records - 1].as_ref().unwrap().len(), BIG % BS);
    assert_eq!(
        dp[8..8 + big_records]
            .iter()
            .flat_map(|r| r.as_ref().unwrap().clone())
            .collect::<Vec<u8>>(),
        c.big
    );
    assert!(dp[fm].is_none());
    let (dpi, n) = index_at(&dp, fm + 1);
    // Items 7, 17, 18: FM after the index, then EOD.
    assert!(dp[fm + 1 + n].is_none());
    assert_eq!(dp.len(), fm + 2 + n);
    for r in &dp[fm + 1..fm + n] {
        assert_eq!(r.as_ref().unwrap().len(), BS, "item 7");
    }
    // Item 8, 9, 10.
    assert_eq!(
        dpi.location,
        IndexLocation {
            partition: 'b',
            start_block: fm as u64 + 1
        }
    );
    assert_eq!(
        dpi.previous,
        Some(IndexLocation {
            partition: 'b',
            start_block: 5
        })
    );
    assert_eq!(dpi.generation, 2);
    // Item 19: the IP is label + exactly one index, overwritten in place at block 5.
    let (ipi, m) = index_at(&ip, 5);
    assert!(ip[5 + m].is_none());
    assert_eq!(ip.len(), 6 + m);
    // Item 17: IP gen ≥ DP gen, IP back pointer = the last DP index.
    assert!(ipi.generation >= dpi.generation);
    assert_eq!(ipi.previous, Some(dpi.location));
    assert_eq!(
        ipi.location,
        IndexLocation {
            partition: 'a',
            start_block: 5
        }
    );
    assert!(ipi.creator.ends_with(" - Unmount"));
    // Same state in both: only the location and pointers differ.
    assert_eq!(ipi.root, dpi.root);
    // Item 13: UIDs.
    let mut uids = Vec::new();
    let mut stack = vec![&ipi.root];
    while let Some(d) = stack.pop() {
        uids.push(d.uid);
        for e in &d.entries {
            match e {
                Entry::Directory(d) => stack.push(d),
                Entry::File(f) => uids.push(f.uid),
            }
        }
    }
    uids.sort();
    let n_uids = uids.len();
    uids.dedup();
    assert_eq!(uids.len(), n_uids, "unique UIDs");
    assert_eq!(uids[0], 1);
    assert_eq!(ipi.highest_file_uid, *uids.last().unwrap());
    // The empty file has no extents, the symlink none either.
    let dirent = ipi
        .root
        .entries
        .iter()
        .find_map(|e| match e {
            Entry::Directory(d) if d.name == "dir" => Some(d),
            _ => None,
        })
        .unwrap();
    for e in &dirent.entries {
        if let Entry::File(f) = e {
            match f.name.as_str() {
                "empty" => assert_eq!(f.content, FileContent::Extents(vec![])),
                "link" => assert_eq!(f.content, FileContent::Symlink("big.bin".into())),
                _ => {}
            }
        }
    }
    // Item 15: `a b:c` percent-encoded; item 16: binary xattr in base64; item 5: NFC on tape.
    let ip_xml: Vec<u8> = ip[5..5 + m]
        .iter()
        .flat_map(|r| r.clone().unwrap())
        .collect();
    let ip_xml = String::from_utf8(ip_xml).unwrap();
    assert!(ip_xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert!(ip_xml.contains("<name percentencoded=\"true\">a%20b%3Ac</name>"));
    assert!(ip_xml.contains("type=\"base64\""));
    assert!(ip_xml.contains("Ü-café ✓.txt") && !ip_xml.contains("e\u{301}"));
    // Item 21: coherency matches the last index of each partition.
    let vcr = vcr_file(&dir);
    let c0 = coherency_file(&dir, 0);
    let c1 = coherency_file(&dir, 1);
    assert_eq!((c0.vcr, c0.count, c0.set_id), (vcr, ipi.generation, 5));
    assert_eq!(
        (c1.vcr, c1.count, c1.set_id),
        (vcr, dpi.generation, fm as u64 + 1)
    );

    // A fresh drive: fast path, consistent, byte-exact.
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(r.fast_path);
    assert!(r.is_consistent(), "{r:?}");
    assert_eq!(r.current, CurrentIndex::IndexPartition);
    assert_eq!(vol.block_size(), BS);
    check_tree(&mut vol, &c);
    let gens: Vec<(u64, char, u64)> = vol
        .generations()
        .unwrap()
        .into_iter()
        .map(|g| (g.generation, g.location.partition, g.location.start_block))
        .collect();
    assert_eq!(
        gens,
        vec![(2, 'a', 5), (2, 'b', fm as u64 + 1), (1, 'b', 5)]
    );
    // A read-only session writes nothing at unmount.
    let before = all_files(&dir);
    vol.unmount().unwrap();
    assert_eq!(all_files(&dir), before);

    // Without MAM: the full scan finds the same index.
    for f in all_files(&dir) {
        if f.starts_with("attr_") {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
    }
    drop(d);
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(!r.fast_path);
    assert!(r.is_consistent(), "{r:?}");
    assert_eq!(vol.index(), &ipi);
    check_tree(&mut vol, &c);
}

#[test]
fn stale_mam_falls_back_to_the_scan() {
    let s = setup(&[]);
    let dir = s.lib.cartridge_dir(BARCODE);
    let c = content();
    {
        let mut d = drive(&s.lib);
        write_tree(&mut d, &c);
    }
    // Coherency that matches the VCR but names an index that is not where it says.
    let vcr = vcr_file(&dir);
    let mut c1 = coherency_file(&dir, 1);
    c1.set_id = 9;
    c1.vcr = vcr;
    std::fs::write(dir.join("attr_1_80c"), c1.encode()).unwrap();
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    assert!(!vol.mount_report().fast_path);
    check_tree(&mut vol, &c);
}

#[test]
fn interrupted_write_is_found_and_reported() {
    let s = setup(&[]);
    let dir = s.lib.cartridge_dir(BARCODE);
    let one = pattern(200_000, 1);
    let two = pattern(150_000, 2);
    let three = pattern(70_000, 3);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("one", &one[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap();
        vol.put_file("two", &two[..], &FileMeta::default()).unwrap();
        // Crash: no unmount.
        let _ = vol.into_device();
    }
    // DP: label, FM, idx gen 1 (5), FM, one (7..11), FM 11, idx gen 2 at 12, FM 13, two (14..17).
    let dp = objects(&dir, 1);
    assert_eq!(dp.len(), 17);
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(!r.fast_path, "the DP does not end in an index");
    assert_eq!(r.current, CurrentIndex::DataPartition);
    assert_eq!(r.extra_blocks, [0, 3]);
    assert!(r.index_partition_stale);
    assert!(!r.is_consistent());
    assert_eq!(vol.index().generation, 2);
    assert_eq!(read_vol(&mut vol, "one"), one);
    assert!(matches!(
        vol.stat("two").unwrap_err(),
        VolumeError::NotFound { .. }
    ));
    // Carry on writing: data after the extra blocks, then a DP index and the IP at unmount.
    vol.put_file("three", &three[..], &FileMeta::default())
        .unwrap();
    vol.unmount().unwrap();
    drop(d);
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(r.fast_path && r.is_consistent(), "{r:?}");
    assert_eq!(vol.index().generation, 3);
    assert_eq!(read_vol(&mut vol, "one"), one);
    assert_eq!(read_vol(&mut vol, "three"), three);
    let g: Vec<u64> = vol
        .generations()
        .unwrap()
        .iter()
        .map(|g| g.generation)
        .collect();
    assert_eq!(g, [3, 3, 2, 1]);
    drop(vol);

    // A crash right after format + data (no sync): the IP index is still current.
    let s = setup(&[]);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("one", &one[..], &FileMeta::default()).unwrap();
        let _ = vol.into_device();
    }
    let mut d = drive(&s.lib);
    let vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert_eq!(r.current, CurrentIndex::IndexPartition);
    assert_eq!(r.extra_blocks, [0, 4]);
    assert!(vol.list("/").unwrap().is_empty());
}

fn read_vol(vol: &mut Volume<&mut Dev>, path: &str) -> Vec<u8> {
    read(vol, path)
}

#[test]
fn sync_policy_writes_dp_indexes() {
    let s = setup(&[]);
    let mut d = drive(&s.lib);
    let mut vol = Volume::format(&mut d, &opts()).unwrap();
    vol.set_sync_policy(SyncPolicy {
        every_bytes: Some(100_000),
        every: None,
    });
    let a = pattern(60_000, 4);
    assert!(
        !vol.put_file("a", &a[..], &FileMeta::default())
            .unwrap()
            .synced
    );
    assert!(
        vol.put_file("b", &a[..], &FileMeta::default())
            .unwrap()
            .synced
    );
    assert!(
        !vol.put_file("c", &a[..], &FileMeta::default())
            .unwrap()
            .synced
    );
    vol.unmount().unwrap();
    let mut vol = Volume::mount(&mut d).unwrap();
    let g: Vec<u64> = vol
        .generations()
        .unwrap()
        .iter()
        .map(|g| g.generation)
        .collect();
    assert_eq!(g, [3, 3, 2, 1]);
    assert_eq!(read_vol(&mut vol, "c"), a);
}

#[test]
fn early_warning_stops_data_and_still_writes_the_index() {
    let s = setup(&[Fault::EarlyWarningAt {
        barcode: BARCODE.into(),
        partition: 1,
        bytes: 600_000,
    }]);
    let mut d = drive(&s.lib);
    let mut vol = Volume::format(&mut d, &opts()).unwrap();
    let small = pattern(100_000, 5);
    let big = pattern(2_000_000, 6);
    vol.put_file("small", &small[..], &FileMeta::default())
        .unwrap();
    let e = vol
        .put_file("big", &big[..], &FileMeta::default())
        .unwrap_err();
    let VolumeError::VolumeFull { path, written } = &e else {
        panic!("{e}");
    };
    assert_eq!(path, "big");
    assert!(*written > 0 && *written < big.len() as u64, "{written}");
    assert!(e.to_string().contains("early warning"), "{e}");
    let e = vol
        .put_file("more", &small[..], &FileMeta::default())
        .unwrap_err();
    assert!(matches!(e, VolumeError::VolumeFull { written: 0, .. }));
    vol.unmount().unwrap();
    let mut vol = Volume::mount(&mut d).unwrap();
    assert!(vol.mount_report().is_consistent());
    assert_eq!(read_vol(&mut vol, "small"), small);
    assert!(vol.stat("big").is_err());
}
