//! Differences between two snapshots, from their manifests alone (no data is read).

use serde::Serialize;

use common::manifest::{Entry, Manifest};
use common::relpath::RelPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Content changed (or the type did).
    Modified,
    /// Same content; mode, owner, times or xattrs changed.
    Metadata,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'm',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub change: Change,
    /// In JSON exactly as in the manifest (a string, or `{"hex": …}` for a name that is not UTF-8).
    pub path: RelPath,
}

pub fn diff(a: &Manifest, b: &Manifest) -> Vec<Difference> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let push = |out: &mut Vec<Difference>, c, e: &Entry| {
        out.push(Difference {
            change: c,
            path: e.path.clone(),
        })
    };
    while i < a.entries.len() || j < b.entries.len() {
        match (a.entries.get(i), b.entries.get(j)) {
            (Some(x), Some(y)) if x.path == y.path => {
                if !x.same_content(y) {
                    push(&mut out, Change::Modified, y);
                } else if !x.same_inode_metadata(y) && !x.path.is_root() {
                    push(&mut out, Change::Metadata, y);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.path < y.path => {
                push(&mut out, Change::Removed, x);
                i += 1;
            }
            (Some(_), Some(y)) => {
                push(&mut out, Change::Added, y);
                j += 1;
            }
            (Some(x), None) => {
                push(&mut out, Change::Removed, x);
                i += 1;
            }
            (None, Some(y)) => {
                push(&mut out, Change::Added, y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}
