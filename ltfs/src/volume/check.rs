//! `ltfsck`-style consistency check and repair (ltfs-format.md §5 "Consistency check", §8 items
//! 17–26, 30).
//!
//! [`Volume::check`] only reads: both label constructs (and that they agree), each partition's last
//! valid index (the §5 scan), the pointer rules, blocks after each partition's last index, missing
//! trailing filemarks, the chain of data-partition indexes through back pointers, the current index's
//! extents against the written area and the index constructs, and MAM coherency (a note, never an
//! error: MAM is not needed for correctness).
//!
//! [`Volume::repair`] recovers to the last consistent index (or a requested older generation) without
//! losing anything that index describes: it never erases or overwrites a data-partition block. See
//! `docs/ltfs.md` for exactly what it writes.

use std::io::BufRead;
use std::time::Instant;

use super::{
    INDEX_READ_LIMIT, LastIndex, MountReport, Result, SyncPolicy, Volume, VolumeError, creator,
    dev_err, medium_of, read_capacity,
};
use crate::coherency::{
    ATTR_VOLUME_CHANGE_REFERENCE, ATTR_VOLUME_COHERENCY, VolumeCoherency, volume_change_reference,
};
use crate::construct::{
    ConstructError, VolumeLabels, read_index, read_label_construct, read_labels,
};
use crate::device::{Position, TapeDevice};
use crate::index::{Directory, Entry, FileContent, Index, IndexLocation, Limits, LtfsTime, Medium};
use crate::scan::{CurrentIndex, IndexPointers, Refusal, choose_current, find_last_index};

/// What kind of inconsistency a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// A label construct is missing or damaged, the labels disagree, the medium does not have two
    /// partitions, or the block size is beyond the drive's maximum. Nothing else can be checked.
    Label,
    /// A partition has no valid index.
    NoIndex,
    /// Blocks between a partition's last index construct and its end of data (`11220E`): an
    /// interrupted write, or a damaged later index.
    ExtraBlocks,
    /// A partition's last index is not followed by a filemark (`11255I`/`11256I`).
    MissingTrailingFilemark,
    /// Something after the last valid index reads as an index but does not parse or does not fit
    /// this volume and position (a damaged index).
    InvalidIndex,
    /// The index partition's back pointer does not name the data partition's last index
    /// (`11205E`/`11206E`).
    PointerMismatch,
    /// The data partition's index is newer than the index partition's (a crash after a sync).
    StaleIndexPartition,
    /// A data-partition index's back pointer does not lead to a valid, earlier index of the same or a
    /// lower generation.
    BackPointer,
    /// An extent of the current index lies outside the written area, in the label area, inside an
    /// index construct, or (for a data-partition index) after the index that describes it.
    BadExtent,
    /// MAM volume coherency is missing or does not describe the tape (a note: mount then scans).
    Coherency,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Label => "label",
            ProblemKind::NoIndex => "no_index",
            ProblemKind::ExtraBlocks => "extra_blocks",
            ProblemKind::MissingTrailingFilemark => "missing_trailing_filemark",
            ProblemKind::InvalidIndex => "invalid_index",
            ProblemKind::PointerMismatch => "pointer_mismatch",
            ProblemKind::StaleIndexPartition => "stale_index_partition",
            ProblemKind::BackPointer => "back_pointer",
            ProblemKind::BadExtent => "bad_extent",
            ProblemKind::Coherency => "coherency",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding of [`Volume::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The physical partition, when the problem has one.
    pub partition: Option<u8>,
    /// Where on it (the first block concerned).
    pub block: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.kind)?;
        match (self.partition, self.block) {
            (Some(p), Some(b)) => write!(f, " partition {p} block {b}:")?,
            (Some(p), None) => write!(f, " partition {p}:")?,
            _ => {}
        }
        write!(f, " {}", self.message)
    }
}

/// An index found on tape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    pub generation: u64,
    /// Its self pointer (logical partition and first block).
    pub location: IndexLocation,
    pub previous: Option<IndexLocation>,
    pub update_time: LtfsTime,
}

impl IndexSummary {
    fn of(idx: &Index) -> IndexSummary {
        IndexSummary {
            generation: idx.generation,
            location: idx.location,
            previous: idx.previous,
            update_time: idx.update_time,
        }
    }
}

/// What the scan found on one physical partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCheck {
    pub partition: u8,
    /// Logical partition ID (`a`, `b`).
    pub id: char,
    pub eod: u64,
    /// The last valid index.
    pub last_index: Option<IndexSummary>,
    /// The block after the last index construct (4 without an index).
    pub end_of_last_index: u64,
    pub trailing_filemark: bool,
    pub extra_blocks: u64,
}

/// What [`Volume::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// No problems (notes do not count).
    pub consistent: bool,
    pub problems: Vec<Problem>,
    /// Findings that do not make the volume inconsistent (MAM coherency).
    pub notes: Vec<Problem>,
    /// The index a mount uses; when the pointers disagree, the valid index with the highest
    /// generation (the index partition's on a tie). `None` without labels or any valid index.
    pub current: Option<IndexSummary>,
    /// The pointer rules' choice (`None` when they fail).
    pub choice: Option<CurrentIndex>,
    /// Per physical partition (empty when the labels could not be read).
    pub partitions: Vec<PartitionCheck>,
    /// Index generations on tape, newest first: the index partition's last index, then the data
    /// partition's last index and the chain of its back pointers (rollback points).
    pub generations: Vec<IndexSummary>,
}

/// What [`Volume::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub before: CheckReport,
    /// What was written, in order, for people.
    pub actions: Vec<String>,
    /// The index whose content the volume now has (the last consistent one, or the requested one).
    pub recovered: IndexSummary,
    /// A rollback: the recovered index is older than the newest valid one.
    pub rolled_back: bool,
    /// The current index after the repair (a new generation when a data-partition index was written).
    pub current: IndexSummary,
    /// The check run after the repair.
    pub after: CheckReport,
}

/// The last index a scan found, with what repair needs of it.
struct Found {
    index: Index,
    start: u64,
    end_block: u64,
    trailing_fm: bool,
}

struct PartState {
    partition: u8,
    eod: u64,
    found: Option<Found>,
    extra: u64,
}

/// An index construct's blocks `[first, end)` (leading FM to past the trailing FM) on a physical
/// partition: no extent may point into one.
#[derive(Debug, Clone, Copy)]
struct Span {
    partition: u8,
    first: u64,
    end: u64,
}

struct Examined {
    report: CheckReport,
    labels: Option<VolumeLabels>,
    block_size: usize,
    ip: u8,
    dp: u8,
    parts: Vec<PartState>,
    /// Where the current index is (physical partition, start block).
    current_at: Option<Position>,
    spans: Vec<Span>,
    /// Native capacity per physical partition, as the drive reports it.
    capacity: [Option<u64>; 2],
}

fn problem(
    kind: ProblemKind,
    partition: Option<u8>,
    block: Option<u64>,
    message: String,
) -> Problem {
    Problem {
        kind,
        partition,
        block,
        message,
    }
}

/// Parses an index streamed from `at` and checks it as `ltfs_read_index()` does, saying what is
/// wrong. The medium's capacity is not checked here: that is a problem of the index (`bad_extent`),
/// not a reason to look for an older one.
fn parse_checked(
    r: &mut dyn BufRead,
    at: Position,
    labels: &VolumeLabels,
) -> std::result::Result<Index, Refusal> {
    let idx = Index::read_xml(r, &Limits::default()).map_err(|e| Refusal {
        is_index: super::mount::is_about_an_index(&e),
        reason: e.to_string(),
    })?;
    if super::mount::index_fits(&idx, at, labels) {
        return Ok(idx);
    }
    let refuse = |reason| Refusal {
        reason,
        is_index: true,
    };
    let label_uuid = &labels.label().volume_uuid;
    if !idx.volume_uuid.eq_ignore_ascii_case(label_uuid) {
        return Err(refuse(format!(
            "index of volume {} (the label says {label_uuid})",
            idx.volume_uuid
        )));
    }
    let here = labels.labels[at.partition as usize].location;
    if idx.location.partition != here || idx.location.start_block != at.block {
        return Err(refuse(format!(
            "self pointer {}/{} but the index is at {here}/{}",
            idx.location.partition, idx.location.start_block, at.block
        )));
    }
    Err(refuse(format!(
        "back pointer {} is not a data-partition index before this one",
        idx.previous.map_or("(none)".into(), |b| format!(
            "{}/{}",
            b.partition, b.start_block
        ))
    )))
}

/// Reads and checks the index whose first record is at `at`.
fn read_index_at<D: TapeDevice>(
    dev: &mut D,
    at: Position,
    labels: &VolumeLabels,
    block_size: usize,
) -> Result<std::result::Result<(Index, u64, bool), String>> {
    dev.locate(at).map_err(dev_err(format!(
        "locating partition {} block {}",
        at.partition, at.block
    )))?;
    match read_index(dev, block_size, INDEX_READ_LIMIT, |r| {
        parse_checked(r, at, labels)
    }) {
        Ok(Ok((i, x))) => Ok(Ok((i, x.records, x.trailing_fm))),
        Ok(Err(r)) => Ok(Err(r.reason)),
        Err(e) if e.is_local() => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The first and last block of every extent of `idx`, with the file's path.
fn extents_of(idx: &Index, block_size: u64) -> Vec<(String, char, u64, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<(&Directory, String)> = vec![(&idx.root, String::new())];
    while let Some((dir, path)) = stack.pop() {
        for e in &dir.entries {
            match e {
                Entry::Directory(d) => stack.push((d, format!("{path}/{}", d.name))),
                Entry::File(f) => {
                    if let FileContent::Extents(xs) = &f.content {
                        for x in xs {
                            let bytes = x.byte_offset.saturating_add(x.byte_count).max(1);
                            let last = x
                                .start_block
                                .saturating_add((bytes - 1) / block_size.max(1));
                            out.push((
                                format!("{path}/{}", f.name),
                                x.partition,
                                x.start_block,
                                last,
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// At most this many extent problems are listed (then a count).
const MAX_EXTENT_PROBLEMS: usize = 20;

/// Checks `idx`'s extents (sitting at `at`) against the medium's capacity, the EODs, the index
/// constructs and, for a data-partition index, its own position.
fn extent_problems(
    idx: &Index,
    at: Position,
    labels: &VolumeLabels,
    block_size: usize,
    eods: [u64; 2],
    spans: &[Span],
    medium: &Medium,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = idx.validate_medium(medium) {
        out.push(problem(
            ProblemKind::BadExtent,
            Some(at.partition),
            Some(at.block),
            e.to_string(),
        ));
    }
    let eod_of = |id: char| labels.physical(id).map(|p| eods[p as usize]);
    if let Err(e) = idx.validate_extents(block_size as u64, eod_of) {
        out.push(problem(
            ProblemKind::BadExtent,
            Some(at.partition),
            Some(at.block),
            e.to_string(),
        ));
    }
    let dp = labels.data_partition();
    let mut more = 0usize;
    for (path, id, first, last) in extents_of(idx, block_size as u64) {
        let Some(p) = labels.physical(id) else {
            out.push(problem(
                ProblemKind::BadExtent,
                None,
                None,
                format!("{path}: extent on partition {id}, which the volume does not have"),
            ));
            continue;
        };
        let msg = if at.partition == dp && p == dp && last + 1 >= at.block {
            Some(format!(
                "{path}: extent {id}/{first}..={last} is not before the index describing it ({id}/{})",
                at.block
            ))
        } else {
            spans
                .iter()
                .find(|s| s.partition == p && first < s.end && last >= s.first)
                .map(|s| {
                    format!(
                        "{path}: extent {id}/{first}..={last} points into the index construct at blocks {}..{}",
                        s.first, s.end
                    )
                })
        };
        if let Some(m) = msg {
            if out.len() < MAX_EXTENT_PROBLEMS {
                out.push(problem(ProblemKind::BadExtent, Some(p), Some(first), m));
            } else {
                more += 1;
            }
        }
    }
    if more > 0 {
        out.push(problem(
            ProblemKind::BadExtent,
            None,
            None,
            format!("… and {more} more extents pointing where they must not"),
        ));
    }
    out
}

/// Reads both labels, reporting each partition's damage separately.
fn check_labels<D: TapeDevice>(
    dev: &mut D,
    problems: &mut Vec<Problem>,
) -> Result<Option<VolumeLabels>> {
    let n = dev
        .partition_count()
        .map_err(dev_err("reading the partition count"))?;
    if n != 2 {
        problems.push(problem(
            ProblemKind::Label,
            None,
            None,
            format!("the medium has {n} partition(s); LTFS needs 2"),
        ));
        return Ok(None);
    }
    let mut ok = true;
    for p in 0..2u8 {
        match read_label_construct(dev, p) {
            Ok(_) => {}
            Err(e) if e.is_local() => {
                ok = false;
                problems.push(problem(
                    ProblemKind::Label,
                    Some(p),
                    None,
                    format!("label construct: {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !ok {
        return Ok(None);
    }
    match read_labels(dev) {
        Ok(l) => Ok(Some(l)),
        Err(
            e @ (ConstructError::LabelMismatch(_)
            | ConstructError::SerialMismatch(..)
            | ConstructError::BadPartitionMap(..)),
        ) => {
            problems.push(problem(ProblemKind::Label, None, None, e.to_string()));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn examine<D: TapeDevice>(dev: &mut D) -> Result<Examined> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut ex = Examined {
        report: CheckReport {
            consistent: false,
            problems: Vec::new(),
            notes: Vec::new(),
            current: None,
            choice: None,
            partitions: Vec::new(),
            generations: Vec::new(),
        },
        labels: None,
        block_size: 0,
        ip: 0,
        dp: 1,
        parts: Vec::new(),
        current_at: None,
        spans: Vec::new(),
        capacity: [None, None],
    };
    let Some(labels) = check_labels(dev, &mut problems)? else {
        ex.report.problems = problems;
        return Ok(ex);
    };
    let block_size = labels.label().block_size as usize;
    let max = dev
        .max_block_size()
        .map_err(dev_err("reading the drive's block limits"))?;
    if block_size == 0 || block_size > max {
        problems.push(problem(
            ProblemKind::Label,
            None,
            None,
            format!("block size {block_size} is not usable with this drive (maximum {max})"),
        ));
        ex.report.problems = problems;
        return Ok(ex);
    }
    let (ip, dp) = (labels.index_partition(), labels.data_partition());
    let dp_id = labels.labels[dp as usize].location;
    let capacity = read_capacity(dev);
    let medium = medium_of(&labels, block_size, capacity);

    // §5: the last valid index of each partition; what failed after it.
    let mut parts = Vec::new();
    for p in [ip, dp] {
        let mut parse_errors: Vec<(u64, String)> = Vec::new();
        let scan = find_last_index(dev, p, block_size, INDEX_READ_LIMIT, |r, at| {
            parse_checked(r, at, &labels).inspect_err(|e| {
                parse_errors.push((at.block, e.reason.clone()));
            })
        })?;
        for r in &scan.rejected {
            if let Some((_, e)) = parse_errors.iter().find(|(b, _)| *b == r.start.block) {
                problems.push(problem(
                    ProblemKind::InvalidIndex,
                    Some(p),
                    Some(r.start.block),
                    format!("an index after the last valid one does not fit: {e}"),
                ));
            }
        }
        let extra = scan.extra_blocks();
        let found = scan.found.map(|f| Found {
            start: f.start.block,
            end_block: f.end_block,
            trailing_fm: f.trailing_fm,
            index: f.index,
        });
        match &found {
            None => {
                problems.push(problem(
                    ProblemKind::NoIndex,
                    Some(p),
                    None,
                    "no valid index on this partition".into(),
                ));
            }
            Some(f) if !f.trailing_fm => problems.push(problem(
                ProblemKind::MissingTrailingFilemark,
                Some(p),
                Some(f.end_block),
                format!(
                    "the last index (generation {}, block {}) has no trailing filemark",
                    f.index.generation, f.start
                ),
            )),
            Some(_) => {}
        }
        if extra > 0 {
            let from = found.as_ref().map_or(4, |f| f.end_block);
            problems.push(problem(
                ProblemKind::ExtraBlocks,
                Some(p),
                Some(from),
                format!(
                    "{extra} block(s) after the last index construct, up to end of data at {}",
                    scan.eod
                ),
            ));
        }
        parts.push(PartState {
            partition: p,
            eod: scan.eod,
            found,
            extra,
        });
    }
    let ptrs = |s: &PartState| {
        s.found.as_ref().map(|f| IndexPointers {
            generation: f.index.generation,
            selfptr: (f.index.location.partition, f.index.location.start_block),
            backptr: f.index.previous.map(|b| (b.partition, b.start_block)),
        })
    };
    let (pi, pd) = (ptrs(&parts[0]), ptrs(&parts[1]));
    let choice = match choose_current(pi.as_ref(), pd.as_ref()) {
        Ok(c) => Some(c),
        Err(crate::scan::PointerError::NoIndex) => None,
        Err(e) => {
            problems.push(problem(
                ProblemKind::PointerMismatch,
                Some(ip),
                parts[0].found.as_ref().map(|f| f.start),
                e.to_string(),
            ));
            None
        }
    };
    if choice == Some(CurrentIndex::DataPartition) {
        problems.push(problem(
            ProblemKind::StaleIndexPartition,
            Some(ip),
            parts[0].found.as_ref().map(|f| f.start),
            format!(
                "the data partition's index (generation {}) is newer than the index partition's",
                pd.map_or(0, |p| p.generation)
            ),
        ));
    }
    // The current index: the pointer rules' choice, else the highest generation (IP on a tie).
    let cur_part = match choice {
        Some(CurrentIndex::IndexPartition | CurrentIndex::OnlyIndexPartition) => Some(0),
        Some(CurrentIndex::DataPartition | CurrentIndex::OnlyDataPartition) => Some(1),
        None => match (pi, pd) {
            (Some(i), Some(d)) => Some(if d.generation > i.generation { 1 } else { 0 }),
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (None, None) => None,
        },
    };

    // Index constructs: the IP's last, the DP's last and the DP chain.
    let mut spans = Vec::new();
    let mut generations = Vec::new();
    if let Some(f) = &parts[0].found {
        spans.push(Span {
            partition: ip,
            first: f.start - 1,
            end: f.end_block,
        });
        generations.push(IndexSummary::of(&f.index));
    }
    if let Some(f) = &parts[1].found {
        spans.push(Span {
            partition: dp,
            first: f.start - 1,
            end: f.end_block,
        });
        generations.push(IndexSummary::of(&f.index));
        let (mut next, mut bound, mut gen_above) = (f.index.previous, f.start, f.index.generation);
        while let Some(loc) = next {
            let bad = |m: String| problem(ProblemKind::BackPointer, Some(dp), Some(bound), m);
            if loc.partition != dp_id || loc.start_block < 5 || loc.start_block >= bound {
                problems.push(bad(format!(
                    "the index at block {bound} points back to {}/{}, not an earlier data-partition index",
                    loc.partition, loc.start_block
                )));
                break;
            }
            let at = Position {
                partition: dp,
                block: loc.start_block,
            };
            match read_index_at(dev, at, &labels, block_size)? {
                Err(e) => {
                    problems.push(bad(format!(
                        "the index at block {bound} points back to block {}, which is not a valid index: {e}",
                        loc.start_block
                    )));
                    break;
                }
                Ok((idx, records, trailing)) => {
                    if idx.generation > gen_above {
                        problems.push(bad(format!(
                            "generation {} at block {} is older on tape than generation {gen_above} at block {bound}",
                            idx.generation, loc.start_block
                        )));
                    }
                    let end = loc.start_block + records + u64::from(trailing);
                    if let Some((b, g)) =
                        valid_index_between(dev, dp, end, bound, &labels, block_size)?
                    {
                        problems.push(bad(format!(
                            "the index at block {bound} points back to block {}, skipping the valid index (generation {g}) at block {b}",
                            loc.start_block
                        )));
                    }
                    spans.push(Span {
                        partition: dp,
                        first: loc.start_block - 1,
                        end,
                    });
                    generations.push(IndexSummary::of(&idx));
                    next = idx.previous;
                    bound = loc.start_block;
                    gen_above = idx.generation;
                }
            }
        }
    }

    let eods = [parts[0].eod, parts[1].eod];
    let eods = if ip == 0 { eods } else { [eods[1], eods[0]] };
    let mut current_at = None;
    if let Some(k) = cur_part {
        let f = parts[k].found.as_ref().expect("a partition with an index");
        let at = Position {
            partition: parts[k].partition,
            block: f.start,
        };
        problems.extend(extent_problems(
            &f.index, at, &labels, block_size, eods, &spans, &medium,
        ));
        ex.report.current = Some(IndexSummary::of(&f.index));
        current_at = Some(at);
    }

    // MAM coherency: a note when it does not describe the tape.
    check_coherency(dev, &labels, &parts, &mut notes);

    ex.report.consistent = problems.is_empty();
    ex.report.problems = problems;
    ex.report.notes = notes;
    ex.report.choice = choice;
    ex.report.generations = generations;
    ex.report.partitions = parts
        .iter()
        .map(|s| PartitionCheck {
            partition: s.partition,
            id: labels.labels[s.partition as usize].location,
            eod: s.eod,
            last_index: s.found.as_ref().map(|f| IndexSummary::of(&f.index)),
            end_of_last_index: s.found.as_ref().map_or(4, |f| f.end_block),
            trailing_filemark: s.found.as_ref().is_some_and(|f| f.trailing_fm),
            extra_blocks: s.extra,
        })
        .collect();
    ex.labels = Some(labels);
    ex.block_size = block_size;
    ex.ip = ip;
    ex.dp = dp;
    ex.parts = parts;
    ex.current_at = current_at;
    ex.spans = spans;
    ex.capacity = capacity;
    Ok(ex)
}

/// A valid index between block `from` (just past an index construct) and the index starting at
/// `to`: data extents hold no filemarks, so only a filemark in between can start one. Spaces over the
/// filemarks there and tries what follows each. `None` when there is none (or the drive cannot say).
fn valid_index_between<D: TapeDevice>(
    dev: &mut D,
    partition: u8,
    from: u64,
    to: u64,
    labels: &VolumeLabels,
    block_size: usize,
) -> Result<Option<(u64, u64)>> {
    let mut pos = from;
    while pos + 1 < to {
        let here = Position {
            partition,
            block: pos,
        };
        if dev.locate(here).is_err() || dev.space_filemarks(1).is_err() {
            return Ok(None);
        }
        let Ok(after) = dev.position() else {
            return Ok(None);
        };
        // `to - 1` is the leading FM of the index at `to`: nothing in between.
        if after.partition != partition || after.block >= to || after.block <= pos {
            return Ok(None);
        }
        if let Ok((idx, _, _)) = read_index_at(dev, after, labels, block_size)? {
            return Ok(Some((after.block, idx.generation)));
        }
        pos = after.block;
    }
    Ok(None)
}

fn check_coherency<D: TapeDevice>(
    dev: &mut D,
    labels: &VolumeLabels,
    parts: &[PartState],
    notes: &mut Vec<Problem>,
) {
    let note = |p: Option<u8>, m: String| problem(ProblemKind::Coherency, p, None, m);
    let vcr = match dev.read_attribute(0, ATTR_VOLUME_CHANGE_REFERENCE) {
        Ok(Some(a)) => volume_change_reference(&a.value),
        Ok(None) => None,
        Err(e) => {
            notes.push(note(
                None,
                format!("MAM not readable ({e}); mount scans the tape"),
            ));
            return;
        }
    };
    let Some(vcr) = vcr else {
        notes.push(note(
            None,
            "no usable volume change reference (MAM 0x0009); mount scans the tape".into(),
        ));
        return;
    };
    for s in parts {
        let p = s.partition;
        let Some(f) = &s.found else { continue };
        let c = match dev.read_attribute(p, ATTR_VOLUME_COHERENCY) {
            Ok(Some(a)) => VolumeCoherency::from_attribute(&a).map_err(|e| e.to_string()),
            Ok(None) => Err("missing".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                notes.push(note(
                    Some(p),
                    format!("volume coherency (MAM 0x080C): {e}; mount scans the tape"),
                ));
                continue;
            }
        };
        let ends = f.trailing_fm && s.extra == 0;
        let fresh = c.vcr == vcr
            && c.version != 0
            && c.uuid.eq_ignore_ascii_case(&labels.label().volume_uuid)
            && c.count == f.index.generation
            && c.set_id == f.start
            && ends;
        if !fresh {
            notes.push(note(
                Some(p),
                format!(
                    "stale volume coherency (MAM 0x080C: VCR {}, generation {}, block {}; the tape has VCR {vcr}, generation {} at block {}{}); mount scans the tape",
                    c.vcr,
                    c.count,
                    c.set_id,
                    f.index.generation,
                    f.start,
                    if ends { "" } else { ", not at end of data" }
                ),
            ));
        }
    }
}

impl<D: TapeDevice> Volume<D> {
    /// Checks the volume on the loaded cartridge like `ltfsck` without repairing: never writes.
    /// Problems that leave nothing to check (damaged labels, no index at all) are reported, not
    /// errors; device failures are errors.
    pub fn check(mut dev: D) -> Result<CheckReport> {
        Ok(examine(&mut dev)?.report)
    }

    /// Makes the volume consistent again, recovering to the last consistent index, or with
    /// `to_generation` to that older generation (a rollback), found through the back pointers; it must
    /// be a complete, valid index whose extents are all on tape. Nothing that index describes is
    /// touched: data-partition blocks are never overwritten.
    ///
    /// * a missing trailing filemark is appended (`11255I`/`11256I`);
    /// * when the data partition has blocks after its last index, no index, a mismatched pointer, or
    ///   for a rollback, a new data-partition index is appended at its end of data (extra blocks stay,
    ///   unreferenced) holding the recovered index's content as a new generation (highest on tape + 1),
    ///   pointing back to the data partition's last valid index;
    /// * the index partition's index is rewritten in place when it is not the current index;
    /// * MAM volume coherency is rewritten.
    pub fn repair(mut dev: D, to_generation: Option<u64>) -> Result<RepairReport> {
        let ex = examine(&mut dev)?;
        let Some(labels) = ex.labels.clone() else {
            return Err(VolumeError::Unrepairable(format!(
                "the labels cannot be used: {}",
                ex.report
                    .problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        };
        if ex.current_at.is_none() {
            return Err(VolumeError::Unrepairable(
                "neither partition has a valid index".into(),
            ));
        }
        let (ip, dp, bs) = (ex.ip, ex.dp, ex.block_size);
        let mut eod = [0u64; 2];
        for s in &ex.parts {
            eod[s.partition as usize] = s.eod;
        }
        let max_generation = ex
            .report
            .generations
            .iter()
            .map(|g| g.generation)
            .max()
            .unwrap_or(0);
        let cur_gen = ex.report.current.as_ref().map_or(0, |c| c.generation);

        // The index to recover to.
        let load = |dev: &mut D, g: &IndexSummary| -> Result<std::result::Result<Index, String>> {
            let p = labels
                .physical(g.location.partition)
                .ok_or_else(|| VolumeError::Unrepairable("bad partition".into()))?;
            let at = Position {
                partition: p,
                block: g.location.start_block,
            };
            Ok(match read_index_at(dev, at, &labels, bs)? {
                Err(e) => Err(e),
                Ok((idx, _, _)) => {
                    let medium = medium_of(&labels, bs, ex.capacity);
                    let bad = extent_problems(&idx, at, &labels, bs, eod, &ex.spans, &medium);
                    if bad.is_empty() {
                        Ok(idx)
                    } else {
                        Err(bad
                            .iter()
                            .map(|p| p.message.clone())
                            .collect::<Vec<_>>()
                            .join("; "))
                    }
                }
            })
        };
        let wanted: Vec<&IndexSummary> = match to_generation {
            Some(g) => {
                let mut v: Vec<&IndexSummary> = ex
                    .report
                    .generations
                    .iter()
                    .filter(|x| x.generation == g)
                    .collect();
                if v.is_empty() {
                    return Err(VolumeError::NoSuchGeneration {
                        generation: g,
                        available: ex.report.generations.iter().map(|g| g.generation).collect(),
                    });
                }
                // Prefer the copy that is the current index.
                v.sort_by_key(|x| {
                    Some(x.location) != ex.report.current.as_ref().map(|c| c.location)
                });
                v
            }
            None => {
                let mut v: Vec<&IndexSummary> = ex.report.current.iter().collect();
                v.extend(
                    ex.report
                        .generations
                        .iter()
                        .filter(|x| x.generation < cur_gen),
                );
                v
            }
        };
        let mut target = None;
        let mut refused = Vec::new();
        for g in wanted {
            match load(&mut dev, g)? {
                Ok(idx) => {
                    target = Some((g.clone(), idx));
                    break;
                }
                Err(e) => refused.push(format!(
                    "generation {} at {}/{}: {e}",
                    g.generation, g.location.partition, g.location.start_block
                )),
            }
        }
        let Some((recovered, index)) = target else {
            return Err(VolumeError::Unrepairable(format!(
                "no complete, valid index to recover to ({})",
                refused.join("; ")
            )));
        };
        let is_current =
            ex.report.current.as_ref() == Some(&recovered) || recovered.generation == cur_gen;
        let rolled_back = !is_current;

        let ipi = ex.parts.iter().position(|s| s.partition == ip).expect("ip");
        let dpi = 1 - ipi;
        let (ips, dps) = (&ex.parts[ipi], &ex.parts[dpi]);
        let need_dp = rolled_back
            || dps.found.is_none()
            || dps.extra > 0
            || (ex.report.choice.is_none() && ips.found.is_some());
        let need_ip = need_dp
            || ips.found.is_none()
            || ips.extra > 0
            || ex.report.choice != Some(CurrentIndex::IndexPartition);

        let mut last = [None, None];
        let mut ends_in_index = [false, false];
        for s in &ex.parts {
            if let Some(f) = &s.found {
                last[s.partition as usize] = Some(LastIndex {
                    generation: f.index.generation,
                    start: f.start,
                    backptr: f.index.previous.map(|b| b.start_block),
                });
                ends_in_index[s.partition as usize] = f.trailing_fm && s.extra == 0;
            }
        }
        let dp_last_loc = dps.found.as_ref().map(|f| f.index.location);
        let mut vol = Volume {
            dev,
            labels: labels.clone(),
            block_size: bs,
            ip,
            dp,
            index,
            dirty: false,
            eod,
            last,
            ends_in_index,
            dp_needs_fm: false,
            report: MountReport {
                fast_path: false,
                current: ex.report.choice.unwrap_or(CurrentIndex::IndexPartition),
                extra_blocks: [0, 0],
                missing_trailing_fm: [false, false],
                rejected: Vec::new(),
                index_partition_stale: false,
            },
            sync: SyncPolicy::default(),
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            full: false,
            wrote: false,
            creator: creator(),
            capacity: ex.capacity,
            packed: None,
            packed_last: None,
        };
        let mut actions = Vec::new();

        // Missing trailing filemarks (where the partition ends in that index).
        for (s, rewritten) in [(dps, false), (ips, need_ip)] {
            let Some(f) = &s.found else { continue };
            if f.trailing_fm || s.extra > 0 || rewritten {
                continue;
            }
            let p = s.partition;
            let at = Position {
                partition: p,
                block: vol.eod[p as usize],
            };
            vol.dev.locate(at).map_err(dev_err(format!(
                "locating partition {p} block {}",
                at.block
            )))?;
            vol.dev
                .write_filemarks(1)
                .map_err(dev_err("writing the missing trailing filemark"))?;
            vol.dev
                .write_filemarks(0)
                .map_err(dev_err("flushing the filemark"))?;
            vol.eod[p as usize] += 1;
            vol.ends_in_index[p as usize] = true;
            vol.wrote = true;
            actions.push(format!(
                "appended the missing trailing filemark after the index at partition {p} block {} (block {})",
                f.start, at.block
            ));
        }

        if need_dp {
            // A new generation on the DP, after everything there (extra blocks stay), pointing back to
            // the DP's last valid index.
            vol.index.generation = max_generation;
            vol.dirty = true;
            match dp_last_loc {
                Some(l) => vol.index.location = l,
                None => {
                    vol.index.previous = None;
                    vol.index.location = IndexLocation {
                        partition: labels.labels[ip as usize].location,
                        start_block: 0,
                    };
                }
            }
            let reason = if rolled_back { "Rollback" } else { "Recovery" };
            let loc = vol.write_index(dp, reason)?;
            actions.push(format!(
                "wrote generation {} (the content of generation {}) as a new data-partition index at {}/{}{}",
                vol.index.generation,
                recovered.generation,
                loc.partition,
                loc.start_block,
                if dps.extra > 0 {
                    format!(
                        ", after the {} unreferenced block(s) at {}..{} (left in place)",
                        dps.extra,
                        dps.found.as_ref().map_or(4, |f| f.end_block),
                        dps.eod
                    )
                } else {
                    String::new()
                }
            ));
        }
        if need_ip {
            let fm_at = vol.last[ip as usize].map_or(4, |l| l.start - 1);
            let loc = vol.write_index(ip, "Recovery")?;
            actions.push(format!(
                "rewrote the index partition's index in place from block {fm_at}: generation {} at {}/{}, pointing back to {}",
                vol.index.generation,
                loc.partition,
                loc.start_block,
                vol.index
                    .previous
                    .map_or("nothing".into(), |b| format!("{}/{}", b.partition, b.start_block))
            ));
        }
        if !actions.is_empty() || !ex.report.notes.is_empty() {
            vol.update_coherency()?;
            actions.push("updated MAM volume coherency (0x080C) on both partitions".into());
        }
        let current = IndexSummary::of(&vol.index);
        let mut dev = vol.into_device();
        let after = examine(&mut dev)?.report;
        Ok(RepairReport {
            before: ex.report,
            actions,
            recovered,
            rolled_back,
            current,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    //! On the in-memory tape (no MAM, so every report carries a coherency note): damage that the
    //! virtual-library tests in `tapectl/tests/ltfs_check.rs` cannot make through a drive.

    use super::*;
    use crate::construct::tests::MemTape;
    use crate::index::{Extent, FileContent};
    use crate::volume::{FileMeta, FormatOptions};

    const BS: usize = 4096;

    fn opts() -> FormatOptions {
        FormatOptions {
            block_size: BS,
            ..FormatOptions::default()
        }
    }

    fn kinds(r: &CheckReport) -> Vec<ProblemKind> {
        let mut k: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
            .collect()
    }

    fn read(t: &mut MemTape, path: &str) -> Vec<u8> {
        let mut vol = Volume::mount(&mut *t).unwrap();
        let mut out = Vec::new();
        vol.read_file(path, &mut out).unwrap();
        out
    }

    /// Format, `a` (3 records at 7), sync (generation 2), unmount.
    fn volume(t: &mut MemTape) -> Vec<u8> {
        let a = data(3 * BS - 1, 1);
        let mut vol = Volume::format(&mut *t, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap();
        a
    }

    #[test]
    fn without_mam_a_clean_volume_is_consistent_with_a_note() {
        let mut t = MemTape::default();
        volume(&mut t);
        let before = t.parts.clone();
        let r = Volume::check(&mut t).unwrap();
        assert!(r.consistent, "{:?}", r.problems);
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.notes[0].kind, ProblemKind::Coherency);
        assert_eq!(t.parts, before);
        // Repair has nothing to write (MAM is not there to update).
        let rr = Volume::repair(&mut t, None).unwrap();
        assert_eq!(t.parts, before);
        assert!(rr.after.consistent);
    }

    #[test]
    fn damaged_labels_and_no_index_cannot_be_repaired() {
        let mut t = MemTape::default();
        volume(&mut t);
        let good = t.parts.clone();
        t.parts[1][2] = Some(b"<ltfslabel>broken".to_vec());
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::Label]);
        assert_eq!(r.problems[0].partition, Some(1));
        assert!(r.current.is_none() && r.partitions.is_empty());
        assert!(matches!(
            Volume::repair(&mut t, None).err().unwrap(),
            VolumeError::Unrepairable(_)
        ));

        t.parts = good;
        for p in &mut t.parts {
            p.truncate(4);
        }
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::NoIndex]);
        assert_eq!(r.problems.len(), 2);
        assert!(matches!(
            Volume::repair(&mut t, None).err().unwrap(),
            VolumeError::Unrepairable(_)
        ));
    }

    #[test]
    fn a_bad_extent_rolls_back_to_the_last_consistent_index() {
        let mut t = MemTape::default();
        let a = volume(&mut t);
        // Generation 3 says `a` starts at block 5: the format index construct of the DP.
        {
            let mut vol = Volume::mount(&mut t).unwrap();
            let Some(Entry::File(f)) = vol.index.root.entries.first_mut() else {
                panic!()
            };
            let FileContent::Extents(xs) = &mut f.content else {
                panic!()
            };
            xs[0] = Extent {
                start_block: 5,
                ..xs[0]
            };
            vol.dirty = true;
            vol.unmount().unwrap();
        }
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::BadExtent], "{:?}", r.problems);
        assert!(
            r.problems[0].message.contains("index construct"),
            "{:?}",
            r.problems
        );
        assert_eq!(r.current.as_ref().unwrap().generation, 3);
        let rr = Volume::repair(&mut t, None).unwrap();
        assert!(rr.rolled_back);
        assert_eq!(rr.recovered.generation, 2);
        assert_eq!(rr.current.generation, 4);
        assert!(rr.after.consistent, "{:?}", rr.after.problems);
        assert_eq!(read(&mut t, "a"), a);
        // Asking for the bad generation is refused.
        let e = Volume::repair(&mut t, Some(3)).err().unwrap();
        assert!(matches!(e, VolumeError::Unrepairable(_)), "{e}");
    }

    #[test]
    fn a_back_pointer_into_data_is_reported() {
        let mut t = MemTape::default();
        volume(&mut t);
        {
            let mut vol = Volume::mount(&mut t).unwrap();
            vol.mkdir_p("d").unwrap();
            // The next DP index points back to a data record instead of the last DP index.
            vol.index.location = IndexLocation {
                partition: 'b',
                start_block: 8,
            };
            vol.unmount().unwrap();
        }
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::BackPointer], "{:?}", r.problems);
        assert!(r.problems[0].message.contains("not a valid index"));
        // The chain stops there.
        let g: Vec<u64> = r.generations.iter().map(|g| g.generation).collect();
        assert_eq!(g, [3, 3]);
    }

    #[test]
    fn blocks_after_the_index_partitions_index_are_overwritten_by_its_rewrite() {
        let mut t = MemTape::default();
        let a = volume(&mut t);
        let dp_before = t.parts[1].clone();
        t.parts[0].push(Some(b"stray".to_vec()));
        t.parts[0].push(None);
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::ExtraBlocks], "{:?}", r.problems);
        assert_eq!(r.problems[0].partition, Some(0));
        let rr = Volume::repair(&mut t, None).unwrap();
        assert!(rr.after.consistent, "{:?}", rr.after.problems);
        // A clean copy in place: same generation, the data partition untouched.
        assert_eq!(rr.current.generation, 2);
        assert_eq!(t.parts[1], dp_before);
        assert_eq!(read(&mut t, "a"), a);
    }

    #[test]
    fn a_back_pointer_skipping_an_index_is_reported() {
        let mut t = MemTape::default();
        volume(&mut t);
        {
            let mut vol = Volume::mount(&mut t).unwrap();
            vol.put_file("b", &data(100, 2)[..], &FileMeta::default())
                .unwrap();
            // The next DP index points back to the format index, skipping generation 2.
            vol.index.location = IndexLocation {
                partition: 'b',
                start_block: 5,
            };
            vol.unmount().unwrap();
        }
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(kinds(&r), [ProblemKind::BackPointer], "{:?}", r.problems);
        assert!(
            r.problems[0]
                .message
                .contains("skipping the valid index (generation 2)"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_crash_while_writing_a_sync_index_loses_nothing() {
        let mut t = MemTape::default();
        let a = volume(&mut t);
        let b = data(5000, 3);
        {
            let mut vol = Volume::mount(&mut t).unwrap();
            vol.put_file("b", &b[..], &FileMeta::default()).unwrap();
            vol.sync().unwrap();
            let _ = vol.into_device();
        }
        // The trailing FM of the sync index never made it.
        assert!(t.parts[1].pop().unwrap().is_none());
        let r = Volume::check(&mut t).unwrap();
        assert_eq!(
            kinds(&r),
            [
                ProblemKind::MissingTrailingFilemark,
                ProblemKind::StaleIndexPartition
            ],
            "{:?}",
            r.problems
        );
        let rr = Volume::repair(&mut t, None).unwrap();
        assert!(rr.after.consistent, "{:?}", rr.after.problems);
        assert_eq!(rr.current.generation, 3);
        assert_eq!(read(&mut t, "a"), a);
        assert_eq!(read(&mut t, "b"), b);
    }
}
