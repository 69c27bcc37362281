//! Which entries of a snapshot a set stores, decided from manifests alone (no file is read): a full
//! set stores every file; an incremental set stores the files whose content changed since its base
//! set's snapshot, names renames (content the base has under a path this snapshot dropped), and
//! lists deletions. Metadata-only changes store nothing: the set manifest carries the new metadata.

use std::collections::{HashMap, HashSet};

use common::manifest::{Kind, Manifest};
use common::relpath::RelPath;

use super::layout::{SetEntry, Stored, tape_path};

/// What a set will hold, before anything is written (parts are filled in by the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPlan {
    pub entries: Vec<SetEntry>,
    pub deleted: Vec<RelPath>,
}

impl SetPlan {
    /// Files whose content goes to tape, in manifest (path) order, with their indexes.
    pub fn files_to_write(&self) -> impl Iterator<Item = (usize, &SetEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.stored == Stored::Here && e.entry.kind == Kind::File)
    }

    pub fn bytes_to_write(&self) -> u64 {
        self.files_to_write().map(|(_, e)| e.entry.size).sum()
    }
}

/// Plans the set `set` of `snapshot` (its manifest, taken: its entries become the plan's);
/// `base` is the base set's manifest entries (the base snapshot as a whole) for an incremental
/// set, `None` for a full one.
pub fn plan(set: &str, snapshot: Manifest, base: Option<&[SetEntry]>) -> SetPlan {
    let base = base.unwrap_or_default();
    let base_by_path: HashMap<&RelPath, &SetEntry> =
        base.iter().map(|e| (&e.entry.path, e)).collect();
    // Base paths this snapshot no longer has, and their content by hash: where a new path's
    // content can come from.
    let (gone_by_hash, deleted) = {
        let now: HashSet<&RelPath> = snapshot.entries.iter().map(|e| &e.path).collect();
        let mut by_hash: HashMap<[u8; 32], &RelPath> = HashMap::new();
        let mut deleted = Vec::new();
        for b in base.iter().filter(|b| !now.contains(&b.entry.path)) {
            deleted.push(b.entry.path.clone());
            if b.entry.kind == Kind::File
                && b.entry.size > 0
                && let Some(h) = b.entry.hash
            {
                by_hash.entry(h).or_insert(&b.entry.path);
            }
        }
        (by_hash, deleted)
    };
    let Manifest { header, entries } = snapshot;
    let (job, snap) = (&header.job, &header.snapshot);
    let entries = entries
        .into_iter()
        .enumerate()
        .map(|(n, e)| {
            let mut stored = Stored::Here;
            let mut from = None;
            let mut tape = None;
            if e.kind == Kind::File {
                let before = base_by_path.get(&e.path).map(|b| &b.entry);
                if e.link.is_some() {
                    stored = Stored::Link;
                } else if before.is_some_and(|b| b.kind == Kind::File && b.same_content(&e)) {
                    stored = Stored::Base;
                } else if let Some(f) = e
                    .hash
                    .filter(|_| e.size > 0)
                    .and_then(|h| gone_by_hash.get(&h))
                {
                    stored = Stored::Renamed;
                    from = Some((*f).clone());
                } else {
                    tape = Some(tape_path(set, job, snap, &e.path, n));
                }
            }
            SetEntry {
                entry: e,
                stored,
                from,
                tape_path: tape,
                parts: Vec::new(),
            }
        })
        .collect();
    SetPlan { entries, deleted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::manifest::{Entry, Header};

    fn entry(path: &str, kind: Kind, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::parse(path.as_bytes()).unwrap(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            mtime_ns: 0,
            size: content.len() as u64,
            target: None,
            hash: (kind == Kind::File).then(|| *blake3::hash(content).as_bytes()),
            block_size: None,
            blocks: Vec::new(),
            xattrs: Vec::new(),
            link: None,
            src: Default::default(),
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest::new(Header::new("j", "s2", "", ""), entries)
    }

    fn stored(p: &SetPlan) -> Vec<(String, Stored)> {
        p.entries
            .iter()
            .map(|e| (e.entry.path.display(), e.stored))
            .collect()
    }

    #[test]
    fn a_full_set_stores_every_file_and_an_incremental_only_new_content() {
        let s1 = manifest(vec![
            entry("", Kind::Dir, b""),
            entry("a", Kind::File, b"same"),
            entry("b", Kind::File, b"old"),
            entry("c", Kind::File, b"moved content"),
            entry("gone", Kind::File, b"bye"),
        ]);
        let full = plan("F", s1, None);
        assert_eq!(full.files_to_write().count(), 4);
        assert!(full.deleted.is_empty());
        let base: Vec<SetEntry> = full.entries.clone();

        let mut a = entry("a", Kind::File, b"same");
        a.mode = 0o600; // metadata only
        let s2 = manifest(vec![
            entry("", Kind::Dir, b""),
            a,
            entry("b", Kind::File, b"new"),
            entry("d", Kind::File, b"moved content"),
            entry("e", Kind::File, b"brand new"),
        ]);
        let inc = plan("I", s2, Some(&base));
        assert_eq!(
            stored(&inc),
            [
                ("/".into(), Stored::Here),
                ("a".into(), Stored::Base),
                ("b".into(), Stored::Here),
                ("d".into(), Stored::Renamed),
                ("e".into(), Stored::Here),
            ]
        );
        assert_eq!(inc.entries[3].from.as_ref().unwrap().display(), "c");
        assert_eq!(inc.entries[1].entry.mode, 0o600, "the new metadata is kept");
        let deleted: Vec<String> = inc.deleted.iter().map(|p| p.display()).collect();
        assert_eq!(deleted, ["c", "gone"]);
        assert_eq!(inc.bytes_to_write(), 3 + 9);
        assert_eq!(inc.entries[2].tape_path.as_deref(), Some("/j/s2/b"));
    }
}
