//! Verify: re-reads a snapshot and checks it against its manifest, naming every mismatch.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::content::{Dest, copy_hashed};
use common::fsmeta;
use common::manifest::{Kind, META_DIR, Manifest};
use common::relpath::RelPath;

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

pub fn verify(root: &Path, manifest: &Manifest) -> VerifyReport {
    let mut problems: Vec<String> = manifest
        .entries
        .par_iter()
        .filter_map(|e| {
            let p = e.path.under(root);
            let md = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(err) => return Some(format!("{}: missing ({err})", e.path)),
            };
            let kind = if md.is_dir() { Kind::Dir } else if md.file_type().is_symlink() { Kind::Symlink } else { Kind::File };
            if kind != e.kind {
                return Some(format!("{}: is a {kind:?}, manifest says {:?}", e.path, e.kind));
            }
            if kind != Kind::Symlink && md.mode() & 0o7777 != e.mode {
                return Some(format!("{}: mode {:o}, manifest says {:o}", e.path, md.mode() & 0o7777, e.mode));
            }
            match kind {
                Kind::Symlink => {
                    let t = std::fs::read_link(&p).ok()?;
                    (Some(t.as_os_str().as_bytes()) != e.target.as_ref().map(|t| t.0.as_slice()))
                        .then(|| format!("{}: symlink target differs from the manifest", e.path))
                }
                Kind::File => {
                    if md.len() != e.size {
                        return Some(format!("{}: size {} bytes, manifest says {}", e.path, md.len(), e.size));
                    }
                    if let Some(l) = &e.link {
                        let same = std::fs::symlink_metadata(l.under(root)).is_ok_and(|lm| lm.ino() == md.ino());
                        if !same {
                            return Some(format!("{}: should be a hard link to {l}", e.path));
                        }
                    }
                    let mut f = match fsmeta::open_read_nofollow(&p) {
                        Ok(f) => f,
                        Err(err) => return Some(format!("{}: cannot read ({err})", e.path)),
                    };
                    match copy_hashed(&mut f, Dest::None) {
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
