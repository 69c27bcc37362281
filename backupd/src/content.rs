//! Copying file content while hashing it: the whole-file BLAKE3 and one BLAKE3 per block.
//!
//! One pass over the source serves three purposes: the manifest hash, block-level updates (only
//! blocks whose hash changed are written, so a ZFS snapshot costs the changed records), and
//! sparseness (all-zero blocks of a fresh copy become holes).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

use common::manifest::block_size_for;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub hash: [u8; 32],
    pub size: u64,
    pub block_size: u64,
    /// Per-block hashes; only kept for files of more than one block.
    pub blocks: Vec<[u8; 32]>,
    pub bytes_written: u64,
    /// The source's size, mtime or ctime changed while it was read.
    pub changed_while_reading: bool,
}

/// How the destination relates to the previous version of the file.
pub enum Dest<'a> {
    /// A new, empty file: zero blocks are left as holes.
    Fresh(&'a File),
    /// An existing file holding the previous version, whose block hashes are known:
    /// only blocks whose hash differs are written.
    Update(&'a File, u64, &'a [[u8; 32]]),
    /// An existing file of unknown content: each block is compared with what is there.
    Reconcile(&'a File),
    /// No destination: hash only.
    None,
}

fn read_full(src: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(16);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")) == 0)
        && tail.iter().all(|x| *x == 0)
}

/// Copies with block hashes (see [`copy_hashed_from`]).
pub fn copy_hashed(src: &mut File, dest: Dest<'_>) -> io::Result<Hashed> {
    let before = src.metadata()?;
    copy_hashed_from(src, &before, dest, true, &mut |_| Ok(()))
}

/// The copy itself, with the source's metadata already at hand. `progress` is told of each
/// block and may stop the copy by returning an error (a cancelled run). Block hashes cost a second
/// BLAKE3 pass over the data, so they are computed only when `want_blocks` (stores updated in
/// place need them) or when `dest` is an update that compares them.
pub fn copy_hashed_from(
    src: &mut File,
    before: &std::fs::Metadata,
    dest: Dest<'_>,
    want_blocks: bool,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Hashed> {
    let want_blocks = want_blocks || matches!(dest, Dest::Update(..));
    let bs = block_size_for(before.len());
    let mut buf = vec![0u8; bs as usize];
    let mut cmp = Vec::new();
    let mut whole = blake3::Hasher::new();
    let mut blocks = Vec::new();
    let mut off = 0u64;
    let mut written = 0u64;
    let mut written_end = 0u64;
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            break;
        }
        let block = &buf[..n];
        whole.update(block);
        let idx = (off / bs) as usize;
        let bh = if want_blocks {
            let h = *blake3::hash(block).as_bytes();
            blocks.push(h);
            h
        } else {
            [0; 32]
        };
        let write_to = match &dest {
            Dest::Fresh(f) => (!is_zero(block)).then_some(*f),
            Dest::Update(f, old_bs, old) => {
                (*old_bs != bs || old.get(idx) != Some(&bh)).then_some(*f)
            }
            Dest::Reconcile(f) => {
                cmp.resize(n, 0);
                let m = f.read_at(&mut cmp, off)?;
                (m != n || cmp[..] != *block).then_some(*f)
            }
            Dest::None => None,
        };
        if let Some(f) = write_to {
            f.write_all_at(block, off)?;
            written += n as u64;
            written_end = off + n as u64;
        }
        off += n as u64;
        progress(n as u64)?;
        if n < buf.len() {
            break;
        }
    }
    match &dest {
        // A fresh file is as long as its last write: extend it over trailing holes.
        Dest::Fresh(f) => {
            if written_end != off {
                f.set_len(off)?;
            }
        }
        Dest::Update(f, ..) | Dest::Reconcile(f) => {
            if f.metadata()?.len() != off {
                f.set_len(off)?;
            }
        }
        Dest::None => {}
    }
    let after = src.metadata()?;
    let changed = after.len() != off
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec();
    let hash = *whole.finalize().as_bytes();
    if blocks.len() <= 1 {
        blocks.clear();
    }
    Ok(Hashed {
        hash,
        size: off,
        block_size: bs,
        blocks,
        bytes_written: written,
        changed_while_reading: changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &std::path::Path, name: &str, data: &[u8]) -> File {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        File::options().read(true).write(true).open(p).unwrap()
    }

    #[test]
    fn fresh_copy_is_sparse_and_hashes_match_b3sum() {
        let d = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[700_000] = 7;
        let mut src = file_with(d.path(), "s", &data);
        let dst = file_with(d.path(), "d", b"");
        let h = copy_hashed(&mut src, Dest::Fresh(&dst)).unwrap();
        assert_eq!(h.hash, *blake3::hash(&data).as_bytes());
        assert_eq!(h.blocks.len(), 8);
        assert_eq!(h.bytes_written, 128 * 1024);
        assert_eq!(std::fs::read(d.path().join("d")).unwrap(), data);
        assert!(dst.metadata().unwrap().blocks() * 512 < (1 << 20));
    }

    #[test]
    fn update_writes_only_changed_blocks() {
        let d = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[300_000] ^= 1;
        new.extend_from_slice(b"tail");
        let mut s0 = file_with(d.path(), "s0", &old);
        let prev = copy_hashed(&mut s0, Dest::None).unwrap();
        let mut src = file_with(d.path(), "s", &new);
        let dst = file_with(d.path(), "d", &old);
        let h = copy_hashed(&mut src, Dest::Update(&dst, prev.block_size, &prev.blocks)).unwrap();
        assert_eq!(h.bytes_written, 128 * 1024 + 4);
        assert_eq!(std::fs::read(d.path().join("d")).unwrap(), new);

        let dst2 = file_with(d.path(), "d2", &old);
        let mut src = file_with(d.path(), "s2", &new);
        let r = copy_hashed(&mut src, Dest::Reconcile(&dst2)).unwrap();
        assert_eq!(r.bytes_written, 128 * 1024 + 4);
        assert_eq!(std::fs::read(d.path().join("d2")).unwrap(), new);

        let mut shorter = file_with(d.path(), "s3", &old[..1000]);
        let r = copy_hashed(&mut shorter, Dest::Update(&dst2, h.block_size, &h.blocks)).unwrap();
        assert_eq!(r.size, 1000);
        assert_eq!(std::fs::read(d.path().join("d2")).unwrap(), &old[..1000]);
    }
}
