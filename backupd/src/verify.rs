//! Verify: re-reads a snapshot and checks it against its manifest, naming every mismatch.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::content::{Dest, copy_hashed_from};
use crate::progress::Progress;
use common::beneath::Beneath;
use common::manifest::{Kind, META_DIR, Manifest};
use common::relpath::RelPath;

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

pub fn verify(root: &Path, manifest: &Manifest, progress: &Progress) -> VerifyReport {
    let tree = match Beneath::open(root) {
        Ok(t) => t,
        Err(err) => {
            return VerifyReport {
                entries: manifest.entries.len() as u64,
                problems: vec![format!(
                    "cannot open the snapshot at {}: {err}",
                    root.display()
                )],
                ..VerifyReport::default()
            };
        }
    };
    let (files, bytes) = manifest
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    progress.start("verifying", files, bytes);
    let mut problems: Vec<String> = manifest
        .entries
        .par_iter()
        .filter_map(|e| {
            // Nothing is reached through a symlink: a directory replaced by one inside the
            // snapshot is reported, never followed.
            let st = match tree.lstat(&e.path) {
                Ok(Some(st)) => st,
                Ok(None) => return Some(format!("{}: missing", e.path)),
                Err(err) => return Some(format!("{}: missing ({err})", e.path)),
            };
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => Kind::Dir,
                libc::S_IFLNK => Kind::Symlink,
                _ => Kind::File,
            };
            if kind != e.kind {
                return Some(format!("{}: is a {}, the manifest says {}", e.path, kind.name(), e.kind.name()));
            }
            if kind != Kind::Symlink && st.st_mode & 0o7777 != e.mode {
                return Some(format!("{}: mode {:o}, manifest says {:o}", e.path, st.st_mode & 0o7777, e.mode));
            }
            match kind {
                Kind::Symlink => {
                    let t = tree.read_link(&e.path).ok()?;
                    (Some(t.as_slice()) != e.target.as_ref().map(|t| t.0.as_slice()))
                        .then(|| format!("{}: symlink target differs from the manifest", e.path))
                }
                Kind::File => {
                    if st.st_size as u64 != e.size {
                        return Some(format!("{}: size {} bytes, manifest says {}", e.path, st.st_size, e.size));
                    }
                    if let Some(l) = &e.link {
                        let same = matches!(tree.lstat(l), Ok(Some(lm)) if lm.st_ino == st.st_ino);
                        if !same {
                            return Some(format!("{}: should be a hard link to {l}", e.path));
                        }
                    }
                    let mut f = match tree.open_read(&e.path) {
                        Ok(f) => f,
                        Err(err) => return Some(format!("{}: cannot read ({err})", e.path)),
                    };
                    let hashed = f.metadata().and_then(|md| {
                        copy_hashed_from(&mut f, &md, Dest::None, true, &mut |n| {
                            progress.bytes(n);
                            Ok(())
                        })
                    });
                    progress.file_done();
                    match hashed {
                        Ok(h) if Some(h.hash) == e.hash => None,
                        Ok(h) => {
                            let bad_block = e.blocks.iter().zip(&h.blocks).position(|(a, b)| a != b);
                            Some(match (bad_block, e.block_size) {
                                (Some(i), Some(bs)) => format!("{}: content differs from the manifest (first bad block at byte {})", e.path, i as u64 * bs),
                                _ => format!("{}: content differs from the manifest", e.path),
                            })
                        }
                        Err(err) => Some(format!("{}: read error ({err})", e.path)),
                    }
                }
                Kind::Dir => None,
            }
        })
        .collect();
    progress.finish();
    let known: HashSet<&RelPath> = manifest.entries.iter().map(|e| &e.path).collect();
    let mut extras = Vec::new();
    find_extras(root, &RelPath::root(), &known, &mut extras);
    problems.extend(
        extras
            .into_iter()
            .map(|p| format!("{p}: not in the manifest")),
    );
    problems.sort();
    let files: Vec<_> = manifest
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    VerifyReport {
        entries: manifest.entries.len() as u64,
        files: files.len() as u64,
        bytes: files.iter().map(|e| e.size).sum(),
        problems,
    }
}

fn find_extras(root: &Path, rel: &RelPath, known: &HashSet<&RelPath>, out: &mut Vec<RelPath>) {
    let Ok(rd) = std::fs::read_dir(rel.under(root)) else {
        return;
    };
    for d in rd.flatten() {
        if rel.is_root() && d.file_name() == META_DIR {
            continue;
        }
        let child = rel.join_name(&d.file_name());
        if !known.contains(&child) {
            out.push(child);
        } else if d.file_type().is_ok_and(|t| t.is_dir()) {
            find_extras(root, &child, known, out);
        }
    }
}
