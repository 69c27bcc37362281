//! Volume behaviour on the in-memory tape (no MAM): the scan path, sparse and hostile extents, a
//! missing trailing filemark, early warning and option checks. The virtual-library tests in
//! `tapectl/tests/ltfs_volume.rs` cover the file-backend layout and MAM.

use super::*;
use crate::construct::tests::MemTape;
use crate::index::{
    Directory, Entry, Extent, File, FileContent, Index, IndexLocation, LtfsTime, Packed, Times,
    Xattr,
};
use std::ops::Range;

const BS: usize = 4096;

fn opts() -> FormatOptions {
    FormatOptions {
        block_size: BS,
        volume_name: Some("vol".into()),
        ..FormatOptions::default()
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read(vol: &mut Volume<&mut MemTape>, path: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    vol.read_file(path, &mut out)?;
    Ok(out)
}

#[test]
fn format_put_unmount_mount_read() {
    let mut t = MemTape::default();
    let a = data(10_000, 1);
    {
        let mut vol = Volume::format(&mut t, &opts()).unwrap();
        assert_eq!(vol.labels().label().block_size, BS as u32);
        assert_eq!(vol.labels().label().volume_uuid.len(), 36);
        vol.put_file("d/a", &a[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap();
    }
    // DP: labels 0–3, FM 4, index 5, FM 6, data 7–9, FM 10, index 11.., FM; IP: labels, FM, index, FM.
    assert_eq!(t.parts[1][7].as_ref().unwrap().len(), BS);
    assert_eq!(t.parts[1][9].as_ref().unwrap().len(), 10_000 - 2 * BS);
    assert!(t.parts[1][10].is_none());
    assert!(t.parts[1].last().unwrap().is_none());
    assert!(t.parts[0].last().unwrap().is_none());
    let mut vol = Volume::mount(&mut t).unwrap();
    let r = vol.mount_report().clone();
    assert!(!r.fast_path && r.is_consistent(), "{r:?}");
    assert_eq!(read(&mut vol, "/d/a").unwrap(), a);
    assert_eq!(vol.index().generation, 2);
    assert_eq!(vol.index().root.name, "vol");
}

#[test]
fn block_size_and_blank_checks() {
    let mut t = MemTape::default();
    for bs in [0, 1024, 4095, (1 << 22) + 1] {
        let o = FormatOptions {
            block_size: bs,
            ..opts()
        };
        let e = Volume::format(&mut t, &o).err().unwrap();
        assert!(matches!(e, VolumeError::BlockSize { .. }), "{e}");
    }
    t.parts[1].push(None);
    let e = Volume::format(&mut t, &opts()).err().unwrap();
    assert!(matches!(e, VolumeError::NotBlank { partition: 1 }), "{e}");
    let o = FormatOptions {
        force: true,
        uuid: Some("not-a-uuid".into()),
        ..opts()
    };
    assert!(matches!(
        Volume::format(&mut t, &o).err().unwrap(),
        VolumeError::BadUuid(_)
    ));
}

/// A file of 3 records at block 7 and a sparse file pointing into it.
fn sparse_volume(t: &mut MemTape) -> Vec<u8> {
    let a = data(3 * BS - 10, 7);
    let mut vol = Volume::format(&mut *t, &opts()).unwrap();
    let r = vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
    assert_eq!(r.extent.unwrap().start_block, 7);
    let mut f = File::new("sparse", 99, Times::default());
    f.length = 20_000;
    f.content = FileContent::Extents(vec![
        Extent {
            file_offset: 8000,
            partition: 'b',
            start_block: 7,
            byte_offset: BS as u64 + 10,
            byte_count: 100,
        },
        Extent {
            file_offset: 1000,
            partition: 'b',
            start_block: 7,
            byte_offset: 100,
            byte_count: 5000,
        },
    ]);
    vol.index.root.entries.push(Entry::File(f));
    vol.index.highest_file_uid = 99;
    vol.dirty = true;
    vol.unmount().unwrap();
    a
}

#[test]
fn holes_byte_offsets_and_tail_are_read_as_the_index_says() {
    let mut t = MemTape::default();
    let a = sparse_volume(&mut t);
    let mut vol = Volume::mount(&mut t).unwrap();
    let got = read(&mut vol, "sparse").unwrap();
    let mut want = vec![0u8; 20_000];
    want[1000..6000].copy_from_slice(&a[100..5100]);
    want[8000..8100].copy_from_slice(&a[BS + 10..BS + 110]);
    assert_eq!(got, want);
}

#[test]
fn hostile_extents_are_errors_not_panics() {
    let mut t = MemTape::default();
    sparse_volume(&mut t);
    let mut vol = Volume::mount(&mut t).unwrap();
    let Some(Entry::File(f)) = vol.index.root.entries.last_mut() else {
        panic!()
    };
    // Past the data: runs into the filemark after it.
    f.length = 1 << 40;
    f.content = FileContent::Extents(vec![Extent {
        file_offset: 0,
        partition: 'b',
        start_block: 7,
        byte_offset: 0,
        byte_count: 1 << 40,
    }]);
    let e = read(&mut vol, "sparse").unwrap_err();
    assert!(matches!(e, VolumeError::Corrupt { .. }), "{e}");
    // Inside the label, and on a partition that does not exist.
    for (p, b) in [('b', 2), ('z', 7)] {
        let Some(Entry::File(f)) = vol.index.root.entries.last_mut() else {
            panic!()
        };
        f.length = 10;
        f.content = FileContent::Extents(vec![Extent {
            file_offset: 0,
            partition: p,
            start_block: b,
            byte_offset: 0,
            byte_count: 10,
        }]);
        let e = read(&mut vol, "sparse").unwrap_err();
        assert!(matches!(e, VolumeError::Corrupt { .. }), "{e}");
    }
    // Paths: `..` is refused, a file is not a directory.
    assert!(matches!(
        vol.stat("../a").unwrap_err(),
        VolumeError::InvalidName { .. }
    ));
    assert!(matches!(
        vol.list("a").unwrap_err(),
        VolumeError::NotADirectory { .. }
    ));
}

#[test]
fn missing_trailing_filemark_is_reported_and_mended_by_the_next_write() {
    let mut t = MemTape::default();
    let a = data(5000, 2);
    let b = data(6000, 3);
    {
        let mut vol = Volume::format(&mut t, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap();
        let _ = vol.into_device();
    }
    // A crash before the trailing FM of the DP index.
    assert!(t.parts[1].pop().unwrap().is_none());
    {
        let mut vol = Volume::mount(&mut t).unwrap();
        let r = vol.mount_report().clone();
        assert_eq!(r.missing_trailing_fm, [false, true]);
        assert_eq!(r.extra_blocks, [0, 0]);
        assert_eq!(r.current, CurrentIndex::DataPartition);
        assert!(r.index_partition_stale);
        assert_eq!(read(&mut vol, "a").unwrap(), a);
        vol.put_file("b", &b[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap();
    }
    let mut vol = Volume::mount(&mut t).unwrap();
    assert!(
        vol.mount_report().is_consistent(),
        "{:?}",
        vol.mount_report()
    );
    assert_eq!(read(&mut vol, "a").unwrap(), a);
    assert_eq!(read(&mut vol, "b").unwrap(), b);
    let g: Vec<u64> = vol
        .generations()
        .unwrap()
        .iter()
        .map(|g| g.generation)
        .collect();
    assert_eq!(g, [3, 3, 2, 1]);
}

#[test]
fn early_warning_on_the_data_partition() {
    let mut t = MemTape {
        early_warning_from: Some(12),
        ..MemTape::default()
    };
    let a = data(2 * BS, 4);
    let big = data(20 * BS, 5);
    {
        let mut vol = Volume::format(&mut t, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        let e = vol
            .put_file("big", &big[..], &FileMeta::default())
            .unwrap_err();
        let VolumeError::VolumeFull { written, .. } = e else {
            panic!("{e}")
        };
        // Blocks 9, 10, 11, 12: early warning is reported once the position passes block 12.
        assert_eq!(written, 4 * BS as u64);
        vol.unmount().unwrap();
    }
    let mut vol = Volume::mount(&mut t).unwrap();
    assert!(vol.mount_report().is_consistent());
    assert_eq!(read(&mut vol, "a").unwrap(), a);
    assert!(vol.stat("big").is_err());
}

#[test]
fn a_file_split_at_early_warning_is_its_parts_concatenated() {
    let big = data(30 * BS + 17, 6);
    let mut src = &big[..];
    let mut tapes = [
        MemTape {
            early_warning_from: Some(12),
            ..MemTape::default()
        },
        MemTape::default(),
    ];
    let mut lengths = Vec::new();
    for t in tapes.iter_mut() {
        let mut vol = Volume::format(t, &opts()).unwrap();
        let r = vol
            .put_file_part("big", &mut src, &FileMeta::default())
            .unwrap();
        let (PartPut::Part(r) | PartPut::Whole(r)) = &r;
        lengths.push((matches!(r, _ if vol.is_full()), r.length));
        // Past early warning only the closing file goes on.
        if vol.is_full() {
            assert!(matches!(
                vol.put_file("more", &b"x"[..], &FileMeta::default()),
                Err(VolumeError::VolumeFull { .. })
            ));
            vol.put_closing_file("desc.json", b"{}", &FileMeta::default())
                .unwrap();
        }
        vol.unmount().unwrap();
    }
    // Early warning is reported once the position passes block 12: the first tape holds whole
    // records up to there, the second the rest.
    assert!(lengths[0].0 && !lengths[1].0, "{lengths:?}");
    assert_eq!(lengths[0].1 % BS as u64, 0);
    assert_eq!(lengths[0].1 + lengths[1].1, big.len() as u64);
    let mut joined = Vec::new();
    for t in tapes.iter_mut() {
        let mut vol = Volume::mount(t).unwrap();
        assert!(vol.mount_report().is_consistent());
        joined.extend(read(&mut vol, "big").unwrap());
    }
    assert_eq!(joined, big);
}

#[test]
fn names_are_looked_up_in_nfc_and_must_be_new() {
    let mut t = MemTape::default();
    let mut vol = Volume::format(&mut t, &opts()).unwrap();
    vol.put_file("cafe\u{301}", &b"x"[..], &FileMeta::default())
        .unwrap();
    assert_eq!(vol.stat("café").unwrap().name, "café");
    assert!(matches!(
        vol.put_file("café", &b"y"[..], &FileMeta::default())
            .unwrap_err(),
        VolumeError::AlreadyExists { .. }
    ));
    assert!(matches!(
        vol.symlink("l", "a\0b", &FileMeta::default()).unwrap_err(),
        VolumeError::InvalidName { .. }
    ));
    let uids: Vec<u64> = vol.list("/").unwrap().iter().map(|e| e.uid).collect();
    assert_eq!(uids, [2]);
    assert_eq!(vol.index().highest_file_uid, 2);
}

#[test]
fn an_index_partition_without_index_gets_one_before_data() {
    let mut t = MemTape::default();
    let a = data(5000, 6);
    {
        let vol = Volume::format(&mut t, &opts()).unwrap();
        vol.unmount().unwrap();
    }
    t.parts[0].truncate(4);
    {
        let mut vol = Volume::mount(&mut t).unwrap();
        assert_eq!(vol.mount_report().current, CurrentIndex::OnlyDataPartition);
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        // The IP got the (clean, generation 1) index before the data went to the DP.
        assert_eq!(vol.last[0].map(|l| (l.generation, l.start)), Some((1, 5)));
        let _ = vol.into_device();
    }
    let vol = Volume::mount(&mut t).unwrap();
    let r = vol.mount_report().clone();
    assert_eq!(r.current, CurrentIndex::IndexPartition);
    assert_eq!(r.extra_blocks, [0, 2]);
}

/// Format, `a` (10,000 bytes), unmount: generation 2, its DP index last on the data partition.
fn two_generations(t: &mut MemTape) -> Vec<u8> {
    let a = data(10_000, 4);
    let mut vol = Volume::format(&mut *t, &opts()).unwrap();
    vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
    vol.unmount().unwrap();
    a
}

/// The next generation of the volume's index, changed by `edit`, as a complete index construct
/// appended to the data partition (what a later session would have written). Returns its block.
fn append_next_index(t: &mut MemTape, edit: impl FnOnce(&mut Index) -> String) -> u64 {
    let vol = Volume::mount(&mut *t).unwrap();
    let mut ix = vol.index().clone();
    let dp_last = vol.last[vol.dp as usize].unwrap().start;
    drop(vol);
    let start = t.parts[1].len() as u64 + 1;
    ix.generation += 1;
    ix.previous = Some(IndexLocation {
        partition: 'b',
        start_block: dp_last,
    });
    ix.location = IndexLocation {
        partition: 'b',
        start_block: start,
    };
    let xml = edit(&mut ix);
    t.locate_eod(1).unwrap();
    let w = crate::construct::write_index_construct(t, xml.as_bytes(), BS).unwrap();
    assert_eq!(w.start.block, start);
    start
}

#[test]
fn a_newest_index_that_cannot_be_used_is_an_error_not_a_silent_fallback() {
    let mut t = MemTape::default();
    let a = two_generations(&mut t);
    // Generation 3 adds `b`, but as a second `a`: a complete index our reader refuses.
    let at = append_next_index(&mut t, |ix| {
        let mut f = File::new("b", ix.highest_file_uid + 1, Times::default());
        f.length = 0;
        ix.highest_file_uid += 1;
        ix.root.entries.push(Entry::File(f));
        ix.to_xml_string()
            .unwrap()
            .replace("<name>b</name>", "<name>a</name>")
    });
    let e = Volume::mount(&mut t).err().expect("refused");
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            VolumeError::UnusableIndex {
                partition: 1,
                block,
                fallback: Some((2, _)),
                ..
            } if block == at
        ),
        "{msg}"
    );
    for needle in [
        "duplicate name \"a\"",
        "generation 2",
        "tapectl ltfs check --repair --generation 2",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    // `check` says the same; rolling back makes the volume usable again.
    let r = Volume::check(&mut t).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::InvalidIndex && p.block == Some(at)),
        "{:?}",
        r.problems
    );
    let before = t.parts.clone();
    let rr = Volume::repair(&mut t, Some(2)).unwrap();
    assert!(rr.after.consistent, "{:?}", rr.after.problems);
    let mut vol = Volume::mount(&mut t).unwrap();
    assert_eq!(read(&mut vol, "a").unwrap(), a);
    drop(vol);

    // The same index cut short by a crash (no trailing filemark) is the remains of an interrupted
    // write: the last complete index is used, and the mount reports the blocks after it.
    t.parts = before;
    t.parts[1].pop();
    let mut vol = Volume::mount(&mut t).unwrap();
    assert_eq!(vol.index().generation, 2);
    assert!(!vol.mount_report().is_consistent());
    assert_eq!(read(&mut vol, "a").unwrap(), a);
}

#[test]
fn lengths_and_extents_beyond_the_medium_are_index_errors_naming_the_file() {
    let mut t = MemTape {
        capacity_mib: Some([1, 10]),
        ..MemTape::default()
    };
    two_generations(&mut t);
    let vol = Volume::mount(&mut t).unwrap();
    // 11 MiB with compression on (the label's default): 2.5 times that.
    assert_eq!(vol.capacity(), Some(11 << 20));
    assert_eq!(vol.max_file_length(), Some((11 << 20) * 5 / 2));
    drop(vol);
    let good = t.parts.clone();

    // A file of 2^62 bytes (an extent at a huge offset needs one): refused by the reader, reported
    // by `check`, and what a rollback gives is said.
    let at = append_next_index(&mut t, |ix| {
        ix.highest_file_uid += 1;
        let mut f = File::new("huge", ix.highest_file_uid, Times::default());
        f.length = 1 << 62;
        f.content = FileContent::Extents(vec![Extent {
            file_offset: (1 << 62) - 10,
            partition: 'b',
            start_block: 7,
            byte_offset: 0,
            byte_count: 10,
        }]);
        ix.root.entries.push(Entry::Directory(Directory {
            entries: vec![Entry::File(f)],
            ..Directory::new("d", ix.highest_file_uid + 1, Times::default())
        }));
        ix.highest_file_uid += 1;
        ix.to_xml_string().unwrap()
    });
    let e = Volume::mount(&mut t).err().expect("refused");
    let msg = e.to_string();
    assert!(
        matches!(e, VolumeError::UnusableIndex { block, .. } if block == at),
        "{msg}"
    );
    assert!(
        msg.contains(
            "/d/huge: a length of 4611686018427387904 bytes, more than the volume can hold"
        ),
        "{msg}"
    );
    let r = Volume::check(&mut t).unwrap();
    assert!(!r.consistent);
    let bad: Vec<&Problem> = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::BadExtent)
        .collect();
    assert!(
        bad.iter().any(|p| p.message.contains("/d/huge")),
        "{:?}",
        r.problems
    );

    // An extent beyond what its partition can hold.
    t.parts = good;
    append_next_index(&mut t, |ix| {
        ix.highest_file_uid += 1;
        let mut f = File::new("far", ix.highest_file_uid, Times::default());
        f.length = 10;
        f.content = FileContent::Extents(vec![Extent {
            file_offset: 0,
            partition: 'b',
            start_block: 1 << 40,
            byte_offset: 0,
            byte_count: 10,
        }]);
        ix.root.entries.push(Entry::File(f));
        ix.to_xml_string().unwrap()
    });
    let msg = Volume::mount(&mut t).err().expect("refused").to_string();
    assert!(
        msg.contains("/far: an extent ends at block 1099511627776 of partition b, which can hold"),
        "{msg}"
    );
}

/// A [`SparseWrite`] that keeps what was written and counts what was skipped.
#[derive(Default)]
struct Recorder {
    bytes: Vec<u8>,
    skipped: u64,
    finished: Option<u64>,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SparseWrite for Recorder {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        self.skipped += n;
        self.bytes.resize(self.bytes.len() + n as usize, 0);
        Ok(())
    }
    fn finish(&mut self, length: u64) -> std::io::Result<()> {
        self.finished = Some(length);
        Ok(())
    }
}

#[test]
fn sparse_files_are_written_as_extents_and_read_back_with_holes_skipped() {
    let mut t = MemTape {
        capacity_mib: Some([1, 10]),
        ..MemTape::default()
    };
    let mut src = vec![0u8; 100_000];
    src[20_000..25_000].copy_from_slice(&data(5000, 1));
    src[60_000..61_000].copy_from_slice(&data(1000, 2));
    let mut vol = Volume::format(&mut t, &opts()).unwrap();
    let before = vol.eod[1];
    let ranges = [20_000..25_000, 60_000..61_000];
    let r = vol
        .put_file_sparse(
            "s",
            std::io::Cursor::new(&src),
            src.len() as u64,
            &ranges,
            &FileMeta::default(),
        )
        .unwrap();
    assert_eq!(r.length, 100_000);
    let offs: Vec<(u64, u64)> = r
        .extents
        .iter()
        .map(|x| (x.file_offset, x.byte_count))
        .collect();
    assert_eq!(offs, [(20_000, 5000), (60_000, 1000)]);
    // Only the data went to tape: 2 records for 5000 bytes, 1 for 1000.
    assert_eq!(vol.eod[1] - before, 3);
    assert_eq!(r.extents[1].start_block, r.extents[0].start_block + 2);
    // All holes: no data at all; and a file that shrank ends where its data did.
    let r = vol
        .put_file_sparse(
            "h",
            std::io::Cursor::new(&src),
            1 << 20,
            &[],
            &FileMeta::default(),
        )
        .unwrap();
    assert_eq!((r.length, r.extents.len()), (1 << 20, 0));
    let r = vol
        .put_file_sparse(
            "shrank",
            std::io::Cursor::new(&src[..22_000]),
            100_000,
            &ranges,
            &FileMeta::default(),
        )
        .unwrap();
    assert_eq!((r.length, r.extents.len()), (22_000, 1));
    // Refused before anything is written: longer than the volume holds, ranges out of order.
    let eod = vol.eod[1];
    let e = vol
        .put_file_sparse(
            "big",
            std::io::Cursor::new(&src),
            1 << 40,
            &[Range { start: 0, end: 10 }],
            &FileMeta::default(),
        )
        .unwrap_err();
    assert!(matches!(e, VolumeError::TooLong { .. }), "{e}");
    let e = vol
        .put_file_sparse(
            "bad",
            std::io::Cursor::new(&src),
            100,
            &[50..60, 0..10],
            &FileMeta::default(),
        )
        .unwrap_err();
    assert!(matches!(e, VolumeError::Source { .. }), "{e}");
    assert_eq!(vol.eod[1], eod);
    assert!(vol.stat("big").is_err() && vol.stat("bad").is_err());
    vol.unmount().unwrap();

    let mut vol = Volume::mount(&mut t).unwrap();
    let mut out = Recorder::default();
    assert_eq!(vol.read_file_sparse("s", &mut out).unwrap(), 100_000);
    assert_eq!(out.bytes, src);
    assert_eq!(out.skipped, 100_000 - 6000);
    assert_eq!(out.finished, Some(100_000));
    let mut out = Recorder::default();
    vol.read_file_sparse("h", &mut out).unwrap();
    assert_eq!((out.skipped, out.finished), (1 << 20, Some(1 << 20)));
    assert_eq!(read(&mut vol, "shrank").unwrap(), src[..22_000]);
}

#[test]
fn directories_deeper_than_an_index_holds_are_refused_before_anything_is_written() {
    let mut t = MemTape::default();
    let mut vol = Volume::format(&mut t, &opts()).unwrap();
    let deep = |n: usize| vec!["d"; n].join("/");
    vol.mkdir_p(&deep(crate::index::MAX_DIR_DEPTH)).unwrap();
    let eod = vol.eod;
    let e = vol
        .mkdir_p(&deep(crate::index::MAX_DIR_DEPTH + 1))
        .unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::TooDeep {
                depth: 1001,
                max: 1000,
                ..
            }
        ),
        "{e}"
    );
    let path = format!("{}/f", deep(crate::index::MAX_DIR_DEPTH + 1));
    let e = vol
        .put_file(&path, &b"data"[..], &FileMeta::default())
        .unwrap_err();
    assert!(matches!(e, VolumeError::TooDeep { .. }), "{e}");
    assert_eq!(vol.eod, eod, "nothing written");
    // At the limit, a file is written and read back.
    let path = format!("{}/f", deep(crate::index::MAX_DIR_DEPTH));
    vol.put_file(&path, &b"data"[..], &FileMeta::default())
        .unwrap();
    vol.unmount().unwrap();
    let mut vol = Volume::mount(&mut t).unwrap();
    assert_eq!(read(&mut vol, &path).unwrap(), b"data");
}

#[test]
fn xattrs_the_index_cannot_hold_are_refused_before_anything_is_written() {
    let mut t = MemTape::default();
    let mut vol = Volume::format(&mut t, &opts()).unwrap();
    let eod = vol.eod;
    let x = |k: &str, n: usize| crate::index::Xattr {
        key: k.into(),
        value: vec![b'v'; n],
    };
    for (xattrs, want) in [
        (vec![x("k", 1), x("k", 2)], "xattr \"k\" is given twice"),
        (
            vec![x("big", crate::index::MAX_XATTR_VALUE + 1)],
            "is 65537 bytes, more than an LTFS index holds (65536)",
        ),
    ] {
        let meta = FileMeta {
            xattrs,
            ..FileMeta::default()
        };
        let e = vol.put_file("f", &b"data"[..], &meta).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    assert_eq!(vol.eod, eod, "nothing written");
}

/// The same session on two copies of one volume, one keeping its new entries packed: every index
/// written is the same (the packed one read back is the same model), the packed entries cost a
/// fixed, small number of bytes per file, and the same refusals come from both.
#[test]
fn packed_new_entries_write_the_same_index_in_a_fraction_of_the_memory() {
    const T0: LtfsTime = LtfsTime {
        secs: 1_700_000_000,
        nanos: 5,
    };
    let at = |s: i64| {
        Times::all(LtfsTime {
            secs: 1_700_000_000 + s,
            nanos: 7,
        })
    };
    let o = FormatOptions {
        uuid: Some("01234567-89ab-4def-8123-456789abcdef".into()),
        ..opts()
    };
    let (mut ta, mut tb) = (MemTape::default(), MemTape::default());
    for t in [&mut ta, &mut tb] {
        let mut vol = Volume::format(&mut *t, &o).unwrap();
        let fixed = FileMeta {
            times: Some(at(-1)),
            ..FileMeta::default()
        };
        vol.put_file("old/x", &b"x"[..], &fixed).unwrap();
        vol.put_file("top", &b"t"[..], &fixed).unwrap();
        vol.set_dir_times("/old", at(1)).unwrap();
        vol.set_dir_times("/", at(0)).unwrap();
        vol.unmount().unwrap();
    }
    let meta = |s: i64| FileMeta {
        times: Some(at(s)),
        ..FileMeta::default()
    };
    let session = |vol: &mut Volume<&mut MemTape>| {
        vol.put_file("old/y", &b"yy"[..], &meta(2)).unwrap();
        vol.mkdir_p("/new/b").unwrap();
        for i in 0..200u32 {
            let p = format!("/new/b/f{i:04}");
            vol.put_file(&p, &data(i as usize % 300, i as u8)[..], &meta(i.into()))
                .unwrap();
        }
        vol.put_file("/new/a", &b""[..], &meta(3)).unwrap(); // after b, not in order
        vol.put_file("/new/c:colon", &b"c"[..], &meta(4)).unwrap();
        let odd = Times {
            creation: T0,
            ..at(5)
        };
        let xmeta = FileMeta {
            times: Some(odd),
            read_only: true,
            xattrs: vec![Xattr {
                key: "user.k".into(),
                value: b"\x00bin".to_vec(),
            }],
        };
        vol.put_file("/new/xattr", &b"xa"[..], &xmeta).unwrap();
        vol.symlink("/new/link", "b/f0001", &meta(6)).unwrap();
        let mut src = vec![0u8; 50_000];
        src[10_000..12_000].copy_from_slice(&data(2000, 3));
        vol.put_file_sparse(
            "/new/sparse",
            std::io::Cursor::new(&src),
            50_000,
            &[10_000..12_000, 40_000..40_010],
            &meta(7),
        )
        .unwrap();
        vol.set_dir_times("/new/b", at(8)).unwrap();
        vol.set_dir_times("/new", odd).unwrap();
        vol.set_dir_times("/old", at(9)).unwrap();
        vol.mkdir_p("/new/b").unwrap();
        for (p, e) in [
            ("/new/b/f0003", "exists"),
            ("/old/x", "exists"),
            ("/top", "exists"),
        ] {
            let err = vol.put_file(p, &b"z"[..], &meta(0)).unwrap_err();
            assert!(
                matches!(err, VolumeError::AlreadyExists { .. }),
                "{p} {e}: {err}"
            );
        }
        let err = vol.put_file("/new/a/z", &b"z"[..], &meta(0)).unwrap_err();
        assert!(matches!(err, VolumeError::NotADirectory { .. }), "{err}");
        let err = vol.mkdir_p("/top/z").unwrap_err();
        assert!(matches!(err, VolumeError::NotADirectory { .. }), "{err}");
    };
    // The first line that differs, not two whole indexes.
    let same = |a: &str, b: &str| {
        if let Some((n, (x, y))) = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
        {
            panic!("line {}: {x:?} (index model) != {y:?} (packed)", n + 1);
        }
        assert_eq!(a.len(), b.len());
    };
    let xml = |vol: &Volume<&mut MemTape>| {
        let mut i = vol.index().clone();
        i.update_time = T0;
        let mut v = Vec::new();
        i.write_xml_with(&mut v, vol.packed()).unwrap();
        String::from_utf8(v).unwrap()
    };
    let (xa, xb) = {
        let mut a = Volume::mount(&mut ta).unwrap();
        let mut b = Volume::mount(&mut tb).unwrap();
        b.pack_new_entries();
        session(&mut a);
        session(&mut b);
        let p = b.packed().unwrap();
        assert_eq!(p.len(), 208, "2 directories and 206 files packed");
        // The deterministic size of what a packed file costs: a 48-byte node and its name (plus
        // what the vectors reserve), against about 260 bytes in the index model.
        assert_eq!(Packed::NODE_BYTES, 48);
        assert!(
            p.heap_bytes() <= 208 * 48 * 2 + 2048 + 4 * 1024,
            "{} bytes for 208 entries",
            p.heap_bytes()
        );
        let (xa, xb) = (xml(&a), xml(&b));
        same(&xa, &xb);
        assert!(xb.contains("<name>f0199</name>") && xb.contains("percentencoded"));
        a.unmount().unwrap();
        b.unmount().unwrap();
        (xa, xb)
    };
    same(&xa, &xb);
    let mut a = Volume::mount(&mut ta).unwrap();
    let mut b = Volume::mount(&mut tb).unwrap();
    same(&xml(&a), &xml(&b));
    assert_eq!(read(&mut b, "/new/b/f0123").unwrap(), data(123, 123));
    assert_eq!(
        read(&mut b, "/new/sparse").unwrap(),
        read(&mut a, "/new/sparse").unwrap()
    );
    assert_eq!(read(&mut b, "/old/y").unwrap(), b"yy");
}
