//! Finding the current index (ltfs-format.md §5): the search of one partition for its last valid index,
//! and the choice between the index and data partitions' indexes (`_ltfs_check_pointers()`).

use std::io::BufRead;

use crate::construct::{ConstructError, read_index};
use crate::device::{Position, TapeDevice};

/// The last valid index found on a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundIndex<T> {
    /// What the caller's parser made of it.
    pub index: T,
    /// Its first record (the self pointer it must carry).
    pub start: Position,
    pub records: u64,
    /// False when no filemark follows it (§5: accepted, flagged `LTFS_NO_TRAIL_FM`; a checker appends one).
    pub trailing_fm: bool,
    /// The block after the construct (after the trailing FM, or after the last record without one).
    pub end_block: u64,
}

/// A candidate that did not make it, for a checker's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Where its first record would be (just past a filemark).
    pub start: Position,
    pub reason: String,
    /// It is an LTFS index that was written completely (a filemark follows it) and refused: a newer
    /// state of the volume that cannot be used, not what an interrupted write left behind. Reading
    /// an older index instead would silently show an older volume.
    pub unusable_index: bool,
}

/// Why the caller's parser refused a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// The candidate is an LTFS index (its root element is `<ltfsindex>`), just not a valid one here.
    pub is_index: bool,
}

/// The result of searching one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionScan<T> {
    pub partition: u8,
    /// The partition's end-of-data block.
    pub eod: u64,
    pub found: Option<FoundIndex<T>>,
    /// Candidates tried after the last one and rejected, latest first.
    pub rejected: Vec<Rejected>,
}

impl<T> PartitionScan<T> {
    /// Blocks between the end of the last index construct and EOD; without an index, blocks after the
    /// label construct (EOD − 4). Anything nonzero is an inconsistency (`11220E`) for `check`.
    pub fn extra_blocks(&self) -> u64 {
        match &self.found {
            Some(f) => self.eod.saturating_sub(f.end_block),
            None => self.eod.saturating_sub(4),
        }
    }
}

/// Searches `partition` for its last valid index, as `ltfs_seek_index()` does (§5):
///
/// 1. locate EOD; if EOD ≤ 4 there is no index;
/// 2. space back one FM; at block 3 (the label's) there is no index; at EOD − 1 (a trailing FM) space
///    back one more, to the leading FM of the last index;
/// 3. space forward over that FM and let `accept(xml, start)` parse and check the XML (UUID, self
///    pointer = `start`, back pointer) as it is read from tape ([`read_index`], at most `limit` bytes:
///    the XML is streamed, never held whole); on failure go to the filemark before and try again, until
///    the label's FM at block 3.
///
/// One deviation, on purpose: the reference steps back two FMs per retry, which relies on where its
/// failed read stopped; this steps back one FM at a time, so every index the reference can reach is
/// tried, in the same order, and the FMs that end indexes only cost one record read (a data record is
/// rejected at once as "not an XML document").
///
/// Device errors that say nothing about the candidate (no medium, not ready, …) end the search with an
/// error; a bad candidate (medium error, oversized record, garbage) is recorded in `rejected`.
pub fn find_last_index<D, T, F>(
    dev: &mut D,
    partition: u8,
    block_size: usize,
    limit: usize,
    mut accept: F,
) -> Result<PartitionScan<T>, ConstructError>
where
    D: TapeDevice + ?Sized,
    F: FnMut(&mut dyn BufRead, Position) -> Result<T, Refusal>,
{
    let dev_err = |block: u64| {
        move |source| ConstructError::Device {
            partition,
            block,
            source,
        }
    };
    dev.locate_eod(partition).map_err(dev_err(0))?;
    let eod = dev.position().map_err(dev_err(0))?.block;
    let mut scan = PartitionScan {
        partition,
        eod,
        found: None,
        rejected: Vec::new(),
    };
    if eod <= 4 {
        return Ok(scan);
    }
    let mut fm = back_one(dev, partition, eod)?;
    // Whether the candidate after `fm` is closed by a filemark (the one the scan came back over).
    let mut closed = false;
    if fm == eod - 1 && fm > 3 {
        fm = back_one(dev, partition, fm)?;
        closed = true;
    }
    while fm > 3 {
        let start = Position {
            partition,
            block: fm + 1,
        };
        dev.locate(start).map_err(dev_err(start.block))?;
        match read_index(dev, block_size, limit, |r| accept(r, start)) {
            Ok(Ok((index, x))) => {
                scan.found = Some(FoundIndex {
                    index,
                    start: x.start,
                    records: x.records,
                    trailing_fm: x.trailing_fm,
                    end_block: x.end_block(),
                });
                return Ok(scan);
            }
            Ok(Err(r)) => scan.rejected.push(Rejected {
                start,
                reason: r.reason,
                unusable_index: r.is_index && closed,
            }),
            Err(e) if e.is_local() => scan.rejected.push(Rejected {
                start,
                reason: e.to_string(),
                unusable_index: false,
            }),
            Err(e) => return Err(e),
        }
        fm = back_one(dev, partition, fm)?;
        closed = true;
    }
    Ok(scan)
}

/// From block `from` (before the object there), spaces back over one filemark and returns its block
/// (0 when there is none).
fn back_one<D: TapeDevice + ?Sized>(
    dev: &mut D,
    partition: u8,
    from: u64,
) -> Result<u64, ConstructError> {
    let err = |source| ConstructError::Device {
        partition,
        block: from,
        source,
    };
    dev.locate(Position {
        partition,
        block: from,
    })
    .map_err(err)?;
    if let Err(e) = dev.space_filemarks(-1) {
        // No filemark before `from`: the drive stops at the beginning of the partition. Without the
        // label's filemarks there is nothing more to try (a label check reports the damage).
        return match dev.position() {
            Ok(p) if p.partition == partition && p.block == 0 => Ok(0),
            _ => Err(err(e)),
        };
    }
    let p = dev.position().map_err(err)?;
    Ok(p.block)
}

/// What the pointer check needs of one index: its generation, self pointer and back pointer (as
/// logical partition ID and block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPointers {
    pub generation: u64,
    pub selfptr: (char, u64),
    pub backptr: Option<(char, u64)>,
}

/// Which index is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentIndex {
    /// The IP index: its generation ≥ the DP's and its back pointer is the DP index. Consistent.
    IndexPartition,
    /// The DP index is newer (higher generation, or the same with no IP back pointer): use it; the
    /// index is dirty and the IP must be rewritten.
    DataPartition,
    /// Only the IP has an index, with no back pointer (nothing to cross-check).
    OnlyIndexPartition,
    /// Only the DP has an index: use it; the IP needs one.
    OnlyDataPartition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error(
        "the index partition's index (generation {ip_generation}) points back to {backptr:?}, but the data partition's last index (generation {dp_generation}) is at {dp_selfptr:?} (11206E)"
    )]
    BackPointerMismatch {
        ip_generation: u64,
        dp_generation: u64,
        backptr: Option<(char, u64)>,
        dp_selfptr: (char, u64),
    },
    #[error(
        "the index partition's index points back to {0:?}, but the data partition has no index (11205E)"
    )]
    BackPointerWithoutDataIndex((char, u64)),
    #[error("neither partition has a valid index")]
    NoIndex,
}

/// Chooses between the last index of the index partition and of the data partition (§5).
pub fn choose_current(
    ip: Option<&IndexPointers>,
    dp: Option<&IndexPointers>,
) -> Result<CurrentIndex, PointerError> {
    match (ip, dp) {
        (None, None) => Err(PointerError::NoIndex),
        (None, Some(_)) => Ok(CurrentIndex::OnlyDataPartition),
        (Some(ip), None) => match ip.backptr {
            Some(b) => Err(PointerError::BackPointerWithoutDataIndex(b)),
            None => Ok(CurrentIndex::OnlyIndexPartition),
        },
        (Some(ip), Some(dp)) => {
            if ip.generation >= dp.generation && ip.backptr == Some(dp.selfptr) {
                Ok(CurrentIndex::IndexPartition)
            } else if dp.generation > ip.generation
                || (dp.generation == ip.generation && ip.backptr.is_none())
            {
                Ok(CurrentIndex::DataPartition)
            } else {
                Err(PointerError::BackPointerMismatch {
                    ip_generation: ip.generation,
                    dp_generation: dp.generation,
                    backptr: ip.backptr,
                    dp_selfptr: dp.selfptr,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::construct::tests::{MemTape, formatted, xml_of};
    use crate::construct::{write_data_records, write_index_construct};

    const BS: usize = 16;

    /// Accepts XML whose self pointer, encoded in the test XML's tail as `@<block>`, matches.
    fn accept_xml(xml: &[u8], at: Position) -> Option<(u64, usize)> {
        let s = std::str::from_utf8(xml).ok()?;
        let (_, tail) = s.rsplit_once('@')?;
        let block: u64 = tail.parse().ok()?;
        (block == at.block).then_some((block, xml.len()))
    }

    /// [`accept_xml`] on the whole stream; what has an `@` counts as an index.
    fn accept_at(r: &mut dyn BufRead, at: Position) -> Result<(u64, usize), Refusal> {
        let mut xml = Vec::new();
        r.read_to_end(&mut xml).map_err(|e| Refusal {
            reason: e.to_string(),
            is_index: false,
        })?;
        accept_xml(&xml, at).ok_or(Refusal {
            reason: "wrong self pointer".into(),
            is_index: xml.contains(&b'@'),
        })
    }

    fn index_xml(selfptr: u64, len: usize) -> Vec<u8> {
        let mut x = xml_of(len);
        x.extend_from_slice(format!("@{selfptr}").as_bytes());
        x
    }

    fn scan(t: &mut MemTape, p: u8) -> PartitionScan<(u64, usize)> {
        find_last_index(t, p, BS, 1 << 16, accept_at).unwrap()
    }

    /// The format layout: labels, then FM 4, an index at 5–7 (3 records), FM 8, EOD 9 on both partitions.
    fn volume() -> MemTape {
        let mut t = formatted();
        for p in [1, 0] {
            t.locate_eod(p).unwrap();
            let w = write_index_construct(&mut t, &index_xml(5, 40), BS).unwrap();
            assert_eq!(w.start.block, 5);
        }
        t
    }

    #[test]
    fn finds_format_indexes() {
        let mut t = volume();
        for p in [0, 1] {
            let s = scan(&mut t, p);
            let f = s.found.as_ref().unwrap();
            assert_eq!(f.index.0, 5);
            assert_eq!((f.start.partition, f.start.block), (p, 5));
            assert!(f.trailing_fm);
            assert_eq!((s.eod, f.end_block, s.extra_blocks()), (9, 9, 0));
            assert!(s.rejected.is_empty());
        }
    }

    #[test]
    fn finds_the_last_of_several_and_falls_back() {
        let mut t = volume();
        t.locate_eod(1).unwrap();
        write_data_records(&mut t, &mut &[7u8; 50][..], BS).unwrap(); // blocks 10..14
        let sp = t.pos.block + 1;
        let w = write_index_construct(&mut t, &index_xml(sp, 70), BS).unwrap();
        let s = scan(&mut t, 1);
        assert_eq!(s.found.as_ref().unwrap().start, w.start);
        assert_eq!(s.extra_blocks(), 0);

        // A later, damaged index (wrong self pointer): the earlier one is found, the bad one reported.
        t.locate_eod(1).unwrap();
        let bad_at = t.pos.block + 1;
        write_index_construct(&mut t, &index_xml(999, 20), BS).unwrap();
        let s = scan(&mut t, 1);
        assert_eq!(s.found.as_ref().unwrap().start, w.start);
        assert_eq!(s.rejected.len(), 2, "{:?}", s.rejected);
        assert_eq!(s.rejected[0].start.block, bad_at);
        // A complete index that is refused is a newer state, not debris; the data before it is not.
        assert!(s.rejected[0].unusable_index);
        assert!(!s.rejected[1].unusable_index);
        // Without its trailing FM (an interrupted write) it is debris.
        t.parts[1].pop();
        let s = scan(&mut t, 1);
        assert_eq!(s.found.as_ref().unwrap().start, w.start);
        assert!(!s.rejected[0].unusable_index);
        t.locate_eod(1).unwrap();
        t.write_filemarks(1).unwrap();
        let s = scan(&mut t, 1);
        // The extra blocks are the rejected construct.
        assert_eq!(s.extra_blocks(), s.eod - w.end.block);
        assert!(s.extra_blocks() > 0);

        // Everything rejected: no index, everything after the label is extra.
        let s = find_last_index(&mut t, 1, BS, 1 << 16, |_, _| {
            Err::<(), _>(Refusal {
                reason: "no".into(),
                is_index: false,
            })
        })
        .unwrap();
        assert!(s.found.is_none());
        assert_eq!(s.extra_blocks(), s.eod - 4);
        assert_eq!(s.rejected.last().unwrap().start.block, 5);
    }

    #[test]
    fn extra_blocks_and_missing_trailing_fm() {
        // Data after the last index.
        let mut t = volume();
        t.locate_eod(1).unwrap();
        write_data_records(&mut t, &mut &[1u8; 40][..], BS).unwrap();
        let s = scan(&mut t, 1);
        let f = s.found.as_ref().unwrap();
        assert_eq!(
            (f.start.block, f.end_block, s.eod, s.extra_blocks()),
            (5, 9, 12, 3)
        );
        assert_eq!(s.rejected.len(), 1);
        assert!(
            s.rejected[0].reason.contains("does not start an XML"),
            "{:?}",
            s.rejected
        );

        // An index without its trailing FM, at EOD.
        let mut t = volume();
        t.parts[0].pop();
        let s = scan(&mut t, 0);
        let f = s.found.as_ref().unwrap();
        assert!(!f.trailing_fm);
        assert_eq!(
            (f.start.block, f.end_block, s.eod, s.extra_blocks()),
            (5, 8, 8, 0)
        );

        // An index without its trailing FM, followed by data.
        let mut t = volume();
        t.parts[1].pop();
        t.locate_eod(1).unwrap();
        write_data_records(&mut t, &mut &[1u8; 20][..], BS).unwrap();
        let s = scan(&mut t, 1);
        let f = s.found.as_ref().unwrap();
        assert!(!f.trailing_fm);
        assert_eq!((f.end_block, s.eod, s.extra_blocks()), (8, 10, 2));

        // An extra filemark after the last index.
        let mut t = volume();
        t.locate_eod(0).unwrap();
        t.write_filemarks(1).unwrap();
        let s = scan(&mut t, 0);
        assert_eq!(s.found.as_ref().unwrap().start.block, 5);
        assert_eq!(s.extra_blocks(), 1);
    }

    #[test]
    fn label_only_and_empty_partitions() {
        let mut t = formatted();
        let s = scan(&mut t, 0);
        assert_eq!((s.eod, s.found.is_none(), s.extra_blocks()), (4, true, 0));
        t.locate_eod(0).unwrap();
        t.write_filemarks(1).unwrap();
        let s = scan(&mut t, 0);
        assert_eq!((s.eod, s.found.is_none(), s.extra_blocks()), (5, true, 1));
        t.locate_eod(0).unwrap();
        t.write_block(b"not an index").unwrap();
        let s = scan(&mut t, 0);
        assert_eq!((s.eod, s.found.is_none(), s.extra_blocks()), (6, true, 2));
        t.parts[1].clear();
        let s = scan(&mut t, 1);
        assert_eq!((s.eod, s.found.is_none()), (0, true));
    }

    #[test]
    fn oversized_candidates_are_bounded() {
        let mut t = volume();
        t.locate_eod(1).unwrap();
        let big = index_xml(10, 400);
        write_index_construct(&mut t, &big, BS).unwrap();
        // The limit rejects the big one; the earlier one is found.
        let s = find_last_index(&mut t, 1, BS, 100, accept_at).unwrap();
        assert_eq!(s.found.as_ref().unwrap().start.block, 5);
        assert!(s.rejected[0].reason.contains("limit"), "{:?}", s.rejected);
        let s = find_last_index(&mut t, 1, BS, 1000, accept_at).unwrap();
        assert_eq!(s.found.as_ref().unwrap().start.block, 10);
    }

    #[test]
    fn no_label_filemarks() {
        // Records and one FM but no label: the scan stops at the beginning of the partition.
        let mut t = MemTape::default();
        t.parts[0] = vec![Some(b"x".to_vec()); 6];
        t.parts[0].push(None);
        t.parts[0].push(Some(b"y".to_vec()));
        let s = scan(&mut t, 0);
        assert!(s.found.is_none());
        assert_eq!(s.rejected.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn any_tape_terminates_without_panic(
            objs in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40)),
                0..60,
            ),
            keep_label in proptest::prelude::any::<bool>(),
        ) {
            let mut t = if keep_label { formatted() } else { MemTape::default() };
            t.parts[1].extend(objs);
            let mut calls = 0;
            let s = find_last_index(&mut t, 1, BS, 64, |x, at| {
                calls += 1;
                accept_at(x, at)
            });
            let s = s.unwrap();
            proptest::prop_assert!(calls <= t.parts[1].len());
            proptest::prop_assert!(s.extra_blocks() <= s.eod);
        }
    }

    #[test]
    fn pointer_rules() {
        let ptr = |generation, selfptr, backptr| IndexPointers {
            generation,
            selfptr,
            backptr,
        };
        let dp = ptr(2, ('b', 10), Some(('b', 5)));
        // Clean unmount.
        let ip = ptr(2, ('a', 5), Some(('b', 10)));
        assert_eq!(
            choose_current(Some(&ip), Some(&dp)),
            Ok(CurrentIndex::IndexPartition)
        );
        let ip3 = ptr(3, ('a', 5), Some(('b', 10)));
        assert_eq!(
            choose_current(Some(&ip3), Some(&dp)),
            Ok(CurrentIndex::IndexPartition)
        );
        // DP newer (crash after a DP sync).
        let dp3 = ptr(3, ('b', 20), Some(('b', 10)));
        assert_eq!(
            choose_current(Some(&ip), Some(&dp3)),
            Ok(CurrentIndex::DataPartition)
        );
        // Same generation, no IP back pointer.
        let ip_nb = ptr(2, ('a', 5), None);
        assert_eq!(
            choose_current(Some(&ip_nb), Some(&dp)),
            Ok(CurrentIndex::DataPartition)
        );
        // Format: both generation 1, IP → b/5.
        let f_ip = ptr(1, ('a', 5), Some(('b', 5)));
        let f_dp = ptr(1, ('b', 5), None);
        assert_eq!(
            choose_current(Some(&f_ip), Some(&f_dp)),
            Ok(CurrentIndex::IndexPartition)
        );
        // 11206E: IP newer, pointing elsewhere; also the same generation pointing elsewhere.
        let ip_bad = ptr(3, ('a', 5), Some(('b', 7)));
        assert!(matches!(
            choose_current(Some(&ip_bad), Some(&dp)),
            Err(PointerError::BackPointerMismatch {
                ip_generation: 3,
                dp_generation: 2,
                ..
            })
        ));
        let ip_nb3 = ptr(3, ('a', 5), None);
        assert!(matches!(
            choose_current(Some(&ip_nb3), Some(&dp)),
            Err(PointerError::BackPointerMismatch { .. })
        ));
        let ip_same_bad = ptr(2, ('a', 5), Some(('b', 7)));
        assert!(matches!(
            choose_current(Some(&ip_same_bad), Some(&dp)),
            Err(PointerError::BackPointerMismatch { .. })
        ));
        // 11205E and the single-partition cases.
        assert_eq!(
            choose_current(Some(&ip), None),
            Err(PointerError::BackPointerWithoutDataIndex(('b', 10)))
        );
        assert_eq!(
            choose_current(Some(&ip_nb), None),
            Ok(CurrentIndex::OnlyIndexPartition)
        );
        assert_eq!(
            choose_current(None, Some(&dp)),
            Ok(CurrentIndex::OnlyDataPartition)
        );
        assert_eq!(choose_current(None, None), Err(PointerError::NoIndex));
    }
}
