//! The LTFS 2.4 index (ltfs-format.md §4): the data model, a streaming XML writer ([`Index::write_xml`]) and a
//! streaming, validating XML reader ([`Index::read_xml`]) for untrusted input.
//!
//! The reader never builds a DOM: memory is proportional to the model it returns, a single XML event is bounded
//! ([`Limits`]), and nesting is handled with an explicit stack, so a 10,000-deep document is a limit error, not a
//! stack overflow. Unknown elements of `ltfsindex`, `directory` and `file` are kept verbatim ([`RawElement`]) and
//! written back (`preserve_unrecognized_tag`).

pub mod names;
pub mod packed;
mod read;
mod write;

#[cfg(test)]
mod tests;

pub use crate::time::{LtfsTime, TimeError};
pub use names::{NameError, NameKind};
pub use packed::{Attrs, DirRef, NewEntry, Packed};

/// The index format version this crate writes.
pub const INDEX_VERSION: &str = "2.4.0";

/// Where an index starts: partition ID (`a`–`z`) and block number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexLocation {
    pub partition: char,
    pub start_block: u64,
}

/// `volumelockstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeLockState {
    Unlocked,
    Locked,
    PermLocked,
}

impl VolumeLockState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeLockState::Unlocked => "unlocked",
            VolumeLockState::Locked => "locked",
            VolumeLockState::PermLocked => "permlocked",
        }
    }

    pub fn parse(s: &str) -> Option<VolumeLockState> {
        match s {
            "unlocked" => Some(VolumeLockState::Unlocked),
            "locked" => Some(VolumeLockState::Locked),
            "permlocked" => Some(VolumeLockState::PermLocked),
            _ => None,
        }
    }
}

/// An element kept verbatim: its XML text, from `<` to the matching `>`, as it appeared in the input
/// (comments dropped). Written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawElement {
    pub xml: String,
}

impl RawElement {
    /// The element's (qualified) name.
    pub fn name(&self) -> &str {
        let s = self.xml.strip_prefix('<').unwrap_or(&self.xml);
        let end = s
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(s.len());
        &s[..end]
    }
}

/// The five times of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Times {
    pub creation: LtfsTime,
    pub change: LtfsTime,
    pub modify: LtfsTime,
    pub access: LtfsTime,
    pub backup: LtfsTime,
}

impl Times {
    /// All five set to `t`.
    pub fn all(t: LtfsTime) -> Times {
        Times {
            creation: t,
            change: t,
            modify: t,
            access: t,
            backup: t,
        }
    }
}

/// An extended attribute. Values that are not XML-safe UTF-8 are written as base64.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xattr {
    pub key: String,
    pub value: Vec<u8>,
}

/// One extent of a file: `byte_count` bytes of the file from `file_offset`, stored from byte `byte_offset` of
/// block `start_block` on `partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    pub file_offset: u64,
    pub partition: char,
    pub start_block: u64,
    pub byte_offset: u64,
    pub byte_count: u64,
}

/// What a file holds: data extents (empty for an empty or all-hole file) or a symlink target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileContent {
    Extents(Vec<Extent>),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct File {
    pub name: String,
    pub length: u64,
    pub read_only: bool,
    pub times: Times,
    pub uid: u64,
    pub xattrs: Vec<Xattr>,
    pub content: FileContent,
    pub unknown: Vec<RawElement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Directory {
    pub name: String,
    pub read_only: bool,
    pub times: Times,
    pub uid: u64,
    pub xattrs: Vec<Xattr>,
    pub entries: Vec<Entry>,
    pub unknown: Vec<RawElement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    Directory(Directory),
    File(File),
}

impl Entry {
    pub fn name(&self) -> &str {
        match self {
            Entry::Directory(d) => &d.name,
            Entry::File(f) => &f.name,
        }
    }

    pub fn uid(&self) -> u64 {
        match self {
            Entry::Directory(d) => d.uid,
            Entry::File(f) => f.uid,
        }
    }
}

impl Directory {
    /// An empty directory.
    pub fn new(name: impl Into<String>, uid: u64, times: Times) -> Directory {
        Directory {
            name: name.into(),
            read_only: false,
            times,
            uid,
            xattrs: Vec::new(),
            entries: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

impl File {
    /// An empty regular file.
    pub fn new(name: impl Into<String>, uid: u64, times: Times) -> File {
        File {
            name: name.into(),
            length: 0,
            read_only: false,
            times,
            uid,
            xattrs: Vec::new(),
            content: FileContent::Extents(Vec::new()),
            unknown: Vec::new(),
        }
    }
}

/// A whole index (`ltfsindex`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Index {
    /// The version read (`ltfsindex@version`); the writer always writes [`INDEX_VERSION`].
    pub version: String,
    pub creator: String,
    pub comment: Option<String>,
    /// 8-4-4-4-12 lowercase hex.
    pub volume_uuid: String,
    pub generation: u64,
    pub update_time: LtfsTime,
    /// Self pointer.
    pub location: IndexLocation,
    /// Back pointer (`previousgenerationlocation`).
    pub previous: Option<IndexLocation>,
    pub allow_policy_update: bool,
    /// `dataplacementpolicy`, kept verbatim.
    pub data_placement_policy: Option<RawElement>,
    pub highest_file_uid: u64,
    pub volume_lock_state: Option<VolumeLockState>,
    pub root: Directory,
    pub unknown: Vec<RawElement>,
}

impl Index {
    /// A fresh generation-1 index with an empty root directory (UID 1).
    pub fn new(
        creator: impl Into<String>,
        volume_uuid: impl Into<String>,
        volume_name: impl Into<String>,
        now: LtfsTime,
        location: IndexLocation,
    ) -> Index {
        Index {
            version: INDEX_VERSION.to_string(),
            creator: creator.into(),
            comment: None,
            volume_uuid: volume_uuid.into(),
            generation: 1,
            update_time: now,
            location,
            previous: None,
            allow_policy_update: true,
            data_placement_policy: None,
            highest_file_uid: 1,
            volume_lock_state: Some(VolumeLockState::Unlocked),
            root: Directory::new(volume_name, 1, Times::all(now)),
            unknown: Vec::new(),
        }
    }

    /// Checks the index against the medium it is on: every file no longer than the volume can hold
    /// ([`Medium::max_file_length`]), every extent on one of its partitions and within the blocks that
    /// partition can hold. A hostile index cannot then claim more than the tape could have; the first
    /// file that does is named.
    pub fn validate_medium(&self, medium: &Medium) -> Result<(), IndexError> {
        let mut stack: Vec<(&Directory, String)> = vec![(&self.root, String::new())];
        while let Some((dir, path)) = stack.pop() {
            for e in &dir.entries {
                let f = match e {
                    Entry::Directory(d) => {
                        stack.push((d, format!("{path}/{}", d.name)));
                        continue;
                    }
                    Entry::File(f) => f,
                };
                let bad = |kind| IndexError::Extent {
                    path: format!("{path}/{}", f.name),
                    kind,
                };
                if let Some(max) = medium.max_file_length
                    && f.length > max
                {
                    return Err(bad(ExtentProblem::LongerThanVolume {
                        length: f.length,
                        capacity: max,
                    }));
                }
                let FileContent::Extents(exts) = &f.content else {
                    continue;
                };
                for x in exts {
                    let Some(&(_, blocks)) = medium.partitions.iter().find(|p| p.0 == x.partition)
                    else {
                        return Err(bad(ExtentProblem::UnknownPartition(x.partition)));
                    };
                    let bytes = x.byte_offset.saturating_add(x.byte_count).max(1);
                    let last = x
                        .start_block
                        .saturating_add((bytes - 1) / medium.block_size.max(1));
                    if let Some(blocks) = blocks
                        && last >= blocks
                    {
                        return Err(bad(ExtentProblem::PastPartition {
                            partition: x.partition,
                            last,
                            blocks,
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks every extent against what only the caller knows: `start_block` ≥ 4 and, where `eod_of(partition)`
    /// returns the partition's EOD block, that the extent's last block lies before it (`ltfs_check_medium`).
    pub fn validate_extents(
        &self,
        block_size: u64,
        eod_of: impl Fn(char) -> Option<u64>,
    ) -> Result<(), IndexError> {
        let mut stack: Vec<(&Directory, String)> = vec![(&self.root, String::new())];
        while let Some((dir, path)) = stack.pop() {
            for e in &dir.entries {
                match e {
                    Entry::Directory(d) => stack.push((d, format!("{path}/{}", d.name))),
                    Entry::File(f) => {
                        let FileContent::Extents(exts) = &f.content else {
                            continue;
                        };
                        for x in exts {
                            let bad = |kind| IndexError::Extent {
                                path: format!("{path}/{}", f.name),
                                kind,
                            };
                            if x.start_block < 4 {
                                return Err(bad(ExtentProblem::BeforeData(x.start_block)));
                            }
                            if block_size == 0 {
                                continue;
                            }
                            let bytes = x.byte_offset.saturating_add(x.byte_count).max(1);
                            let last = x.start_block.saturating_add((bytes - 1) / block_size);
                            if let Some(eod) = eod_of(x.partition)
                                && last >= eod
                            {
                                return Err(bad(ExtentProblem::PastEod {
                                    partition: x.partition,
                                    last,
                                    eod,
                                }));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Deepest element nesting an index may have (the root element counts 1). The reference implementation
/// reads an index from tape with libxml2 and `XML_PARSE_HUGE` (`xml_schema_from_tape()`,
/// `src/libltfs/xml_reader_libltfs.c`), and libxml2 refuses a document with more than 2048 open elements
/// then (256 without `XML_PARSE_HUGE`): a deeper index is one the reference cannot read.
pub const MAX_XML_DEPTH: usize = 2048;

/// Deepest directory nesting below the root, the one limit the reader ([`Limits::default`]), the index
/// writer and the volume's writing side share. A file in a directory nested this deep has its deepest
/// element (`…/file/extentinfo/extent/fileoffset`, or an xattr's `key`) at depth 2·1000 + 7 = 2007, which
/// leaves room under [`MAX_XML_DEPTH`] for the unknown elements a file or directory may carry.
pub const MAX_DIR_DEPTH: usize = 1000;

/// Bytes of a name or xattr key (255 code points of at most 4 bytes fit); a symlink target may have
/// [`MAX_SYMLINK_BYTES`]. Shared by the reader's [`Limits::default`] and the writers.
pub const MAX_NAME_BYTES: usize = 1024;

/// Bytes of a symlink target.
pub const MAX_SYMLINK_BYTES: usize = 4 * MAX_NAME_BYTES;

/// Bytes of one xattr value.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// What a volume's medium can hold, as its drive reports it, for [`Index::validate_medium`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    pub block_size: u64,
    /// The longest file the volume can hold, in bytes (`None`: unknown, not checked).
    pub max_file_length: Option<u64>,
    /// The partitions (logical ID) and, where known, the most blocks each can hold.
    pub partitions: Vec<(char, Option<u64>)>,
}

/// Bounds for the reader. Every one of them turns hostile input into an [`ErrorKind::Limit`] error.
/// [`Limits::default`] is also what the writer refuses to exceed, so an index this crate writes is one it
/// reads back (and one the reference implementation reads: see [`MAX_XML_DEPTH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Directory nesting below the root.
    pub max_depth: usize,
    /// Element nesting, the root element counting 1 (unknown elements included).
    pub max_xml_depth: usize,
    /// Files plus directories.
    pub max_entries: u64,
    /// UTF-8 bytes of a decoded name or xattr key (a symlink target may have 4 times as many).
    pub max_name_bytes: usize,
    /// Bytes of one decoded xattr value.
    pub max_xattr_value: usize,
    /// Characters of `comment` (65536 in the reference, `INDEX_MAX_COMMENT_LEN`); also bounds `creator`.
    pub max_comment: usize,
    /// Bytes of one preserved unknown element.
    pub max_unknown: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: MAX_DIR_DEPTH,
            max_xml_depth: MAX_XML_DEPTH,
            max_entries: 50_000_000,
            max_name_bytes: MAX_NAME_BYTES,
            max_xattr_value: MAX_XATTR_VALUE,
            max_comment: 65536,
            max_unknown: 1 << 20,
        }
    }
}

/// What is wrong with an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("not an LTFS index: {0}")]
    NotAnIndex(String),
    #[error("unsupported index version {0:?} (supported: 1.0.0 to 2.99.99)")]
    Version(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    #[error("unexpected {0}")]
    Unexpected(String),
    #[error("CDATA is not allowed in an LTFS index")]
    Cdata,
    #[error("invalid {what}: {value:?}")]
    BadValue { what: &'static str, value: String },
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error("invalid name {name:?}: {error}")]
    Name { name: String, error: NameError },
    #[error("duplicate name {0:?} in this directory")]
    DuplicateName(String),
    #[error("duplicate xattr key {0:?}")]
    DuplicateXattr(String),
    #[error("fileuid {0}: {1}")]
    Uid(u64, &'static str),
    #[error("highestfileuid {highest} is lower than fileuid {max}")]
    HighestUid { highest: u64, max: u64 },
    #[error("extents overlap at file offset {0}")]
    ExtentOverlap(u64),
    #[error("extent ends at byte {end}, past the file length {length}")]
    ExtentTooLong { end: u64, length: u64 },
    #[error("a file has both extentinfo and symlink")]
    ExtentAndSymlink,
    #[error("limit exceeded: {0}")]
    Limit(String),
}

/// A problem found by [`Index::validate_extents`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtentProblem {
    #[error("extent starts at block {0}, inside the label area (< 4)")]
    BeforeData(u64),
    #[error("extent ends at block {last} of partition {partition}, at or past its EOD {eod}")]
    PastEod {
        partition: char,
        last: u64,
        eod: u64,
    },
    #[error("a length of {length} bytes, more than the volume can hold ({capacity} bytes)")]
    LongerThanVolume { length: u64, capacity: u64 },
    #[error("an extent on partition {0}, which the volume does not have")]
    UnknownPartition(char),
    #[error(
        "an extent ends at block {last} of partition {partition}, which can hold {blocks} blocks"
    )]
    PastPartition {
        partition: char,
        last: u64,
        blocks: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("LTFS index I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The input is not a valid index. `offset` is the byte offset in the XML where the problem was found,
    /// `path` the element path, e.g. `ltfsindex/directory/contents/file[3]/extentinfo/extent[1]`.
    #[error("invalid LTFS index at byte {offset}, {path}: {kind}")]
    Invalid {
        offset: u64,
        path: String,
        kind: ErrorKind,
    },
    /// The model cannot be written as a valid index (`path` is the file path inside the volume).
    #[error("cannot write LTFS index, {path}: {kind}")]
    Unwritable { path: String, kind: ErrorKind },
    #[error("LTFS index, {path}: {kind}")]
    Extent { path: String, kind: ExtentProblem },
}

impl IndexError {
    /// The kind of a reading or writing problem.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            IndexError::Invalid { kind, .. } | IndexError::Unwritable { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The element path of a reading problem.
    pub fn path(&self) -> Option<&str> {
        match self {
            IndexError::Invalid { path, .. }
            | IndexError::Unwritable { path, .. }
            | IndexError::Extent { path, .. } => Some(path),
            IndexError::Io(_) => None,
        }
    }
}
