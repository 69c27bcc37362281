//! Entries added to an index in a compact form: what a writer of many files keeps per file while a
//! volume is written (a tape set of a million small files), written into the index XML exactly as the
//! same entries in the [`Index`](super::Index) model would be.
//!
//! Per entry: one 48-byte [`Node`] (sizes, one time, the UID, one extent) and its name in one byte
//! arena; directories are indices, their children a linked list in insertion order. What does not fit
//! a node (five different times, xattrs, several extents, a symlink target) is kept aside for that
//! entry only. Directories of the index proper that get new entries are named by their position in it.

use std::collections::HashMap;

use super::{Directory, Extent, File, FileContent, LtfsTime, Times, Xattr};

/// No node / no child.
pub(crate) const NONE: u32 = u32::MAX;

const DIR: u8 = 1;
const SYMLINK: u8 = 2;
const READ_ONLY: u8 = 4;
const EXTENT: u8 = 8;
const EXTRA: u8 = 16;

/// One entry: 48 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    name: u32,
    name_len: u16,
    flags: u8,
    /// The extent's partition (an ASCII letter).
    partition: u8,
    /// The next sibling.
    next: u32,
    nanos: u32,
    uid: u64,
    length: u64,
    /// The extent's start block (a file), the index of its [`Dir`] (a directory).
    block: u64,
    secs: i64,
}

/// Directories' children: first and last, and whether the names came in ascending order so far (then a
/// name greater than the last is new without looking at the others).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dir {
    first: u32,
    last: u32,
    sorted: bool,
}

/// What a node cannot hold.
#[derive(Debug, Clone, Default)]
struct Extra {
    times: Option<Times>,
    xattrs: Vec<Xattr>,
    extents: Option<Vec<Extent>>,
    symlink: Option<String>,
}

/// A directory that entries go into: one of the index proper, by the positions of its ancestors and
/// itself in their parents' `entries` (the root: empty), or a packed one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DirRef {
    Indexed(Vec<u32>),
    Packed(u32),
}

/// Entries added in compact form (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Packed {
    names: Vec<u8>,
    nodes: Vec<Node>,
    dirs: Vec<Dir>,
    extras: HashMap<u32, Extra>,
    /// New children of directories of the index proper.
    indexed: HashMap<Vec<u32>, u32>,
}

/// A new packed entry's attributes.
pub struct Attrs<'a> {
    pub times: Times,
    pub read_only: bool,
    pub xattrs: &'a [Xattr],
}

/// A packed entry as the model's directory (without entries) or file, for the XML writer.
pub(crate) enum Unpacked {
    Dir(Directory),
    File(File),
}

/// What a new packed entry is.
pub enum NewEntry<'a> {
    Dir,
    File { length: u64, extents: &'a [Extent] },
    Symlink(&'a str),
}

impl Packed {
    pub fn new() -> Packed {
        Packed::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Bytes held per entry by the fixed part (a node); names and what a node cannot hold come on top.
    pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

    /// Bytes of memory held: nodes, names, directories (capacity, not length), and what is kept aside.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * Self::NODE_BYTES
            + self.names.capacity()
            + self.dirs.capacity() * std::mem::size_of::<Dir>()
            + self.extras.len() * (std::mem::size_of::<Extra>() + 8)
            + self.indexed.len() * 64
    }

    /// The name of node `n`.
    pub fn name(&self, n: u32) -> &str {
        self.name_of(n)
    }

    fn name_of(&self, n: u32) -> &str {
        let n = &self.nodes[n as usize];
        let b = &self.names[n.name as usize..n.name as usize + n.name_len as usize];
        std::str::from_utf8(b).expect("names are stored from &str")
    }

    fn dir_index(&self, at: &DirRef) -> Option<u32> {
        match at {
            DirRef::Indexed(p) => self.indexed.get(p).copied(),
            DirRef::Packed(n) => Some(self.nodes[*n as usize].block as u32),
        }
    }

    /// The packed child of `at` named `name` (NFC), if any.
    pub fn find(&self, at: &DirRef, name: &str) -> Option<u32> {
        let d = self.dirs[self.dir_index(at)? as usize];
        if d.last == NONE || (d.sorted && self.name_of(d.last) < name) {
            return None;
        }
        // The usual case when a writer comes back to a parent after a subdirectory.
        if self.name_of(d.last) == name {
            return Some(d.last);
        }
        let mut c = d.first;
        while c != NONE {
            if self.name_of(c) == name {
                return Some(c);
            }
            c = self.nodes[c as usize].next;
        }
        None
    }

    /// Whether `at` has a packed child named `name` (NFC): quick when names came in ascending order.
    pub fn has(&self, at: &DirRef, name: &str) -> bool {
        self.find(at, name).is_some()
    }

    pub fn is_dir(&self, n: u32) -> bool {
        self.nodes[n as usize].flags & DIR != 0
    }

    /// Adds `name` (NFC, valid, not yet in `at`) to `at` with UID `uid`; its node.
    pub fn add(&mut self, at: &DirRef, name: &str, uid: u64, attrs: Attrs, what: NewEntry) -> u32 {
        let Attrs {
            times,
            read_only,
            xattrs,
        } = attrs;
        let me = u32::try_from(self.nodes.len()).expect("fewer than 2^32 entries");
        let d = match self.dir_index(at) {
            Some(d) => d,
            None => {
                let d = self.new_dir();
                if let DirRef::Indexed(p) = at {
                    self.indexed.insert(p.clone(), d);
                }
                d
            }
        };
        let mut extra = Extra::default();
        let mut flags = if read_only { READ_ONLY } else { 0 };
        let (mut length, mut block, mut partition) = (0, 0, 0);
        match what {
            NewEntry::Dir => {
                flags |= DIR;
                block = u64::from(self.new_dir());
            }
            NewEntry::File { length: l, extents } => {
                length = l;
                match extents {
                    [] => {}
                    [x] if x.file_offset == 0
                        && x.byte_offset == 0
                        && x.byte_count == l
                        && x.partition.is_ascii() =>
                    {
                        flags |= EXTENT;
                        block = x.start_block;
                        partition = x.partition as u8;
                    }
                    xs => extra.extents = Some(xs.to_vec()),
                }
            }
            NewEntry::Symlink(t) => {
                flags |= SYMLINK;
                extra.symlink = Some(t.to_string());
            }
        }
        let uniform = times == Times::all(times.modify);
        if !uniform {
            extra.times = Some(times);
        }
        extra.xattrs = xattrs.to_vec();
        if extra.times.is_some()
            || !extra.xattrs.is_empty()
            || extra.extents.is_some()
            || extra.symlink.is_some()
        {
            flags |= EXTRA;
            self.extras.insert(me, extra);
        }
        let name_at = u32::try_from(self.names.len()).expect("less than 4 GiB of names");
        self.names.extend_from_slice(name.as_bytes());
        self.nodes.push(Node {
            name: name_at,
            name_len: u16::try_from(name.len()).expect("names are at most 1024 bytes"),
            flags,
            partition,
            next: NONE,
            nanos: times.modify.nanos,
            uid,
            length,
            block,
            secs: times.modify.secs,
        });
        let dir = &mut self.dirs[d as usize];
        if dir.last == NONE {
            dir.first = me;
        } else {
            let last = dir.last;
            let sorted = dir.sorted && self.name_of(last) < name;
            self.nodes[last as usize].next = me;
            self.dirs[d as usize].sorted = sorted;
        }
        self.dirs[d as usize].last = me;
        me
    }

    fn new_dir(&mut self) -> u32 {
        let d = u32::try_from(self.dirs.len()).expect("fewer than 2^32 directories");
        self.dirs.push(Dir {
            first: NONE,
            last: NONE,
            sorted: true,
        });
        d
    }

    /// Sets the times of the packed directory `n`; whether they changed.
    pub fn set_times(&mut self, n: u32, times: Times) -> bool {
        if self.times_of(n) == times {
            return false;
        }
        let node = &mut self.nodes[n as usize];
        node.secs = times.modify.secs;
        node.nanos = times.modify.nanos;
        if times == Times::all(times.modify) {
            if let Some(x) = self.extras.get_mut(&n) {
                x.times = None;
            }
        } else {
            node.flags |= EXTRA;
            self.extras.entry(n).or_default().times = Some(times);
        }
        true
    }

    fn times_of(&self, n: u32) -> Times {
        let node = &self.nodes[n as usize];
        self.extras
            .get(&n)
            .and_then(|x| x.times)
            .unwrap_or_else(|| {
                Times::all(LtfsTime {
                    secs: node.secs,
                    nanos: node.nanos,
                })
            })
    }

    /// The first packed child of the directory of the index proper at `path`, or of packed directory
    /// node `n`.
    pub(crate) fn first_child_of_indexed(&self, path: &[u32]) -> u32 {
        self.indexed
            .get(path)
            .map_or(NONE, |&d| self.dirs[d as usize].first)
    }

    pub(crate) fn first_child(&self, n: u32) -> u32 {
        self.dirs[self.nodes[n as usize].block as usize].first
    }

    pub(crate) fn next(&self, n: u32) -> u32 {
        self.nodes[n as usize].next
    }

    /// Node `n` as the model's directory (without entries) or file, for the XML writer.
    pub(crate) fn entry(&self, n: u32) -> Unpacked {
        let node = &self.nodes[n as usize];
        let extra = self.extras.get(&n);
        let times = self.times_of(n);
        let xattrs = extra.map(|x| x.xattrs.clone()).unwrap_or_default();
        let read_only = node.flags & READ_ONLY != 0;
        let name = self.name_of(n).to_string();
        if node.flags & DIR != 0 {
            let mut d = Directory::new(name, node.uid, times);
            d.read_only = read_only;
            d.xattrs = xattrs;
            return Unpacked::Dir(d);
        }
        let mut f = File::new(name, node.uid, times);
        f.length = node.length;
        f.read_only = read_only;
        f.xattrs = xattrs;
        f.content = if node.flags & SYMLINK != 0 {
            FileContent::Symlink(extra.and_then(|x| x.symlink.clone()).unwrap_or_default())
        } else if let Some(xs) = extra.and_then(|x| x.extents.clone()) {
            FileContent::Extents(xs)
        } else if node.flags & EXTENT != 0 {
            FileContent::Extents(vec![Extent {
                file_offset: 0,
                partition: node.partition as char,
                start_block: node.block,
                byte_offset: 0,
                byte_count: node.length,
            }])
        } else {
            FileContent::Extents(Vec::new())
        };
        Unpacked::File(f)
    }
}
