//! Which entries of a snapshot a set stores, decided from manifests alone (no file is read): a full
//! set stores every file; an incremental set stores the files whose content changed since its base
//! set's snapshot, names renames (content the base has under a path this snapshot dropped), and
//! lists deletions. Metadata-only changes store nothing: the set manifest carries the new metadata.
//!
//! The plan is not held in memory: the snapshot manifest is read entry by entry and the plan's
//! entries go to a file in a temporary directory of the state directory (removed with the plan),
//! which the source reader, each copy's writer and the set manifest read in turn. What a set of a
//! million files holds per file is then the LTFS index of the tape being written.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use common::jsonl::Lines;
use common::manifest::{Entry, EntryStream, Kind, check_links};
use common::relpath::RelPath;
use serde::{Deserialize, Serialize};

use super::layout::{SetEntry, Stored, tape_path};

/// The longest plan line read back (the manifest's own bound).
const MAX_LINE: usize = 64 << 20;

/// A directory that is removed (with what is in it) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `state_dir/tmp/<name>`, emptied first (a crashed writer's leftovers).
    pub fn new(state_dir: &Path, name: &str) -> Result<TempDir> {
        let p = state_dir.join("tmp").join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a set will hold, before anything is written: counts, the deletions, and its entries in a
/// file ([`SetPlan::reader`]; parts are the writer's).
#[derive(Debug)]
pub struct SetPlan {
    file: PathBuf,
    /// Entries (lines of the set manifest).
    pub entries: u64,
    /// Files whose content goes to tape, and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub renamed: u64,
    pub unchanged: u64,
    pub deleted: Vec<RelPath>,
}

/// One plan entry as the plan file holds it.
#[derive(Serialize, Deserialize)]
struct PlanLine {
    e: Entry,
    s: Stored,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<RelPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// The plan's entries in order, numbered from 0.
pub struct PlanReader {
    lines: Lines<std::fs::File>,
    next: usize,
    name: String,
}

impl PlanReader {
    /// The next entry and its number.
    pub fn next_entry(&mut self) -> Result<Option<(usize, SetEntry)>> {
        let l: Option<PlanLine> = self
            .lines
            .next_json("plan entry")
            .map_err(|e| anyhow!("{}: line {}: {}", self.name, e.line, e.message))?;
        Ok(l.map(|l| {
            let n = self.next;
            self.next += 1;
            (
                n,
                SetEntry {
                    entry: l.e,
                    stored: l.s,
                    from: l.f,
                    tape_path: l.t,
                    parts: Vec::new(),
                },
            )
        }))
    }

    /// Passes over entries until the next is number `n` (not before the next).
    pub fn skip_to(&mut self, n: usize) -> Result<()> {
        while self.next < n {
            match self.lines.next_line() {
                Ok(Some(_)) => self.next += 1,
                Ok(None) => return Err(anyhow!("{}: fewer than {n} entries", self.name)),
                Err(e) => return Err(anyhow!("{}: line {}: {}", self.name, e.line, e.message)),
            }
        }
        Ok(())
    }

    /// The number of the next entry.
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for PlanReader {
    type Item = Result<(usize, SetEntry)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

impl SetPlan {
    /// Its entries from the first.
    pub fn reader(&self) -> Result<PlanReader> {
        let name = self.file.display().to_string();
        let f = std::fs::File::open(&self.file).with_context(|| format!("cannot open {name}"))?;
        let lines = Lines::new(f, MAX_LINE).map_err(|e| anyhow!("{name}: {}", e.message))?;
        Ok(PlanReader {
            lines,
            next: 0,
            name,
        })
    }

    /// Files whose content goes to tape, in manifest (path) order, with their numbers.
    pub fn files_to_write(&self) -> Result<impl Iterator<Item = Result<(usize, SetEntry)>>> {
        Ok(self.reader()?.filter(|r| {
            r.as_ref().map_or(true, |(_, e)| {
                e.stored == Stored::Here && e.entry.kind == Kind::File
            })
        }))
    }

    pub fn bytes_to_write(&self) -> u64 {
        self.bytes
    }
}

struct PlanWriter {
    file: PathBuf,
    out: BufWriter<zstd::Encoder<'static, std::fs::File>>,
    plan: SetPlan,
}

impl PlanWriter {
    fn create(dir: &Path) -> Result<PlanWriter> {
        let file = dir.join("plan.zst");
        let f = std::fs::File::create(&file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        let enc = zstd::Encoder::new(f, 1)?;
        Ok(PlanWriter {
            out: BufWriter::with_capacity(1 << 16, enc),
            plan: SetPlan {
                file: file.clone(),
                entries: 0,
                files: 0,
                bytes: 0,
                renamed: 0,
                unchanged: 0,
                deleted: Vec::new(),
            },
            file,
        })
    }

    fn push(&mut self, l: PlanLine) -> Result<()> {
        let p = &mut self.plan;
        p.entries += 1;
        match l.s {
            Stored::Here if l.e.kind == Kind::File => {
                p.files += 1;
                p.bytes += l.e.size;
            }
            Stored::Renamed => p.renamed += 1,
            Stored::Base => p.unchanged += 1,
            _ => {}
        }
        serde_json::to_writer(&mut self.out, &l)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(self, deleted: Vec<RelPath>) -> Result<SetPlan> {
        // Not synced: a temporary file, read back by this process only.
        let enc = self.out.into_inner().map_err(|e| e.into_error())?;
        enc.finish()?
            .flush()
            .with_context(|| format!("cannot write {}", self.file.display()))?;
        Ok(SetPlan {
            deleted,
            ..self.plan
        })
    }
}

/// Plans the set `set` of the snapshot whose manifest is the file `manifest` (read entry by entry,
/// twice when it has hard links or the set is incremental); `base` is the base set's manifest
/// entries (the base snapshot as a whole, sorted by path) for an incremental set, `None` for a
/// full one. The plan's file goes in `dir`.
pub fn plan(set: &str, manifest: &Path, base: Option<&[SetEntry]>, dir: &Path) -> Result<SetPlan> {
    let base = base.unwrap_or_default();
    let shown = manifest.display();
    let ctx = || format!("reading the snapshot manifest {shown}");
    // Base paths this snapshot no longer has (both are sorted by path), and their content by hash:
    // where a new path's content can come from.
    let (gone_by_hash, deleted) = {
        let mut by_hash: HashMap<[u8; 32], &RelPath> = HashMap::new();
        let mut gone: Vec<&SetEntry> = Vec::new();
        if !base.is_empty() {
            let mut s = EntryStream::open(manifest).with_context(ctx)?;
            let mut j = 0;
            while let Some(e) = s.next_entry().with_context(ctx)? {
                while j < base.len() && base[j].entry.path < e.path {
                    gone.push(&base[j]);
                    j += 1;
                }
                if j < base.len() && base[j].entry.path == e.path {
                    j += 1;
                }
            }
            gone.extend(&base[j..]);
        }
        let mut deleted = Vec::with_capacity(gone.len());
        for b in gone {
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
    let mut s = EntryStream::open(manifest).with_context(ctx)?;
    let (job, snap) = (s.header().job.clone(), s.header().snapshot.clone());
    let mut w = PlanWriter::create(dir)?;
    let mut n = 0usize;
    while let Some(e) = s.next_entry().with_context(ctx)? {
        let mut stored = Stored::Here;
        let mut from = None;
        let mut tape = None;
        if e.kind == Kind::File {
            let before = base
                .binary_search_by(|b| b.entry.path.cmp(&e.path))
                .ok()
                .map(|i| &base[i].entry);
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
                tape = Some(tape_path(set, &job, &snap, &e.path, n));
            }
        }
        w.push(PlanLine {
            e,
            s: stored,
            f: from,
            t: tape,
        })?;
        n += 1;
    }
    check_links(manifest, s.links()).with_context(ctx)?;
    w.finish(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::manifest::{Header, Manifest};

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

    fn entries(p: &SetPlan) -> Vec<SetEntry> {
        p.reader().unwrap().map(|r| r.unwrap().1).collect()
    }

    fn stored(p: &SetPlan) -> Vec<(String, Stored)> {
        entries(p)
            .iter()
            .map(|e| (e.entry.path.display(), e.stored))
            .collect()
    }

    /// Plans from the manifest saved in a file of `dir`, as the writer does.
    fn plan_of(dir: &Path, set: &str, m: Manifest, base: Option<&[SetEntry]>) -> SetPlan {
        let sub = dir.join(set);
        std::fs::create_dir_all(&sub).unwrap();
        let f = sub.join("manifest.zst");
        m.save(&f).unwrap();
        plan(set, &f, base, &sub).unwrap()
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
        let tmp = tempfile::tempdir().unwrap();
        let full = plan_of(tmp.path(), "F", s1, None);
        assert_eq!(full.files_to_write().unwrap().count(), 4);
        assert_eq!((full.files, full.entries), (4, 5));
        assert!(full.deleted.is_empty());
        let base: Vec<SetEntry> = entries(&full);

        let mut a = entry("a", Kind::File, b"same");
        a.mode = 0o600; // metadata only
        let s2 = manifest(vec![
            entry("", Kind::Dir, b""),
            a,
            entry("b", Kind::File, b"new"),
            entry("d", Kind::File, b"moved content"),
            entry("e", Kind::File, b"brand new"),
        ]);
        let inc = plan_of(tmp.path(), "I", s2, Some(&base));
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
        let ie = entries(&inc);
        assert_eq!(ie[3].from.as_ref().unwrap().display(), "c");
        assert_eq!(ie[1].entry.mode, 0o600, "the new metadata is kept");
        assert_eq!((inc.renamed, inc.unchanged), (1, 1));
        let deleted: Vec<String> = inc.deleted.iter().map(|p| p.display()).collect();
        assert_eq!(deleted, ["c", "gone"]);
        assert_eq!(inc.bytes_to_write(), 3 + 9);
        assert_eq!(ie[2].tape_path.as_deref(), Some("/j/s2/b"));
    }
}
