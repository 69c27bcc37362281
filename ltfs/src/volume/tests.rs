//! Volume behaviour on the in-memory tape (no MAM): the scan path, sparse and hostile extents, a
//! missing trailing filemark, early warning and option checks. The virtual-library tests in
//! `tapectl/tests/ltfs_volume.rs` cover the file-backend layout and MAM.

use super::*;
use crate::construct::tests::MemTape;
use crate::index::{Entry, Extent, File, FileContent, Times};

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
