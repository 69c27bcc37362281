//! Mounting (§5): labels, then the current index from the MAM fast path when the coherency records
//! match the tape, else the full scan of both partitions and the pointer rules.

use std::io::BufRead;
use std::time::Instant;

use super::{
    INDEX_READ_LIMIT, LastIndex, MountReport, Result, SyncPolicy, Volume, VolumeError, creator,
    medium_of, read_capacity,
};
use crate::coherency::{self, ATTR_VOLUME_CHANGE_REFERENCE, ATTR_VOLUME_COHERENCY, PartitionRole};
use crate::construct::{VolumeLabels, read_index, read_labels};
use crate::device::{Position, TapeDevice};
use crate::index::{Index, IndexError, IndexLocation, Limits, Medium};
use crate::scan::{CurrentIndex, IndexPointers, Refusal, choose_current, find_last_index};

/// What a reader checks of an index found at `at` (`ltfs_read_index()`): the label's UUID, the self
/// pointer equal to where it sits, and a back pointer on the DP that is sane.
pub(crate) fn index_fits(idx: &Index, at: Position, labels: &VolumeLabels) -> bool {
    let here = labels.labels[at.partition as usize].location;
    let dp_id = labels.label().data_partition;
    if !idx
        .volume_uuid
        .eq_ignore_ascii_case(&labels.label().volume_uuid)
        || idx.location
            != (IndexLocation {
                partition: here,
                start_block: at.block,
            })
    {
        return false;
    }
    match idx.previous {
        None => true,
        Some(b) => {
            b.partition == dp_id
                && b.start_block >= 5
                && !(here == dp_id
                    && at.block != 5
                    && b.start_block >= at.block.saturating_sub(2)
                    && b.start_block != at.block)
        }
    }
}

/// Whether an index error is about an LTFS index (its root element is `<ltfsindex>`), as opposed to
/// something that is not one at all.
pub(crate) fn is_about_an_index(e: &IndexError) -> bool {
    match e {
        IndexError::Invalid { path, .. } => path.starts_with("ltfsindex"),
        IndexError::Extent { .. } | IndexError::Unwritable { .. } => true,
        IndexError::Io(_) => false,
    }
}

/// Parses an index streamed from `at` and checks it: the reader's checks, [`index_fits`], and the
/// medium's capacity ([`Index::validate_medium`]).
pub(crate) fn parse_at(
    r: &mut dyn BufRead,
    at: Position,
    labels: &VolumeLabels,
    medium: &Medium,
) -> std::result::Result<Index, Refusal> {
    let refusal = |e: IndexError| Refusal {
        is_index: is_about_an_index(&e),
        reason: e.to_string(),
    };
    let idx = Index::read_xml(r, &Limits::default()).map_err(refusal)?;
    if !index_fits(&idx, at, labels) {
        return Err(Refusal {
            reason:
                "not an index of this volume at this position (UUID, self pointer or back pointer)"
                    .into(),
            is_index: true,
        });
    }
    idx.validate_medium(medium).map_err(refusal)?;
    Ok(idx)
}

struct Found {
    index: Index,
    current: CurrentIndex,
    eod: [u64; 2],
    last: [Option<LastIndex>; 2],
    ends_in_index: [bool; 2],
    dp_needs_fm: bool,
    report_extra: [u64; 2],
    missing_fm: [bool; 2],
    rejected: Vec<crate::scan::Rejected>,
    fast: bool,
}

impl<D: TapeDevice> Volume<D> {
    /// Mounts the volume on the loaded cartridge. Inconsistencies that leave a valid current index
    /// (extra blocks after the last index, a missing trailing filemark, a stale IP) are reported in
    /// [`Volume::mount_report`], not errors.
    pub fn mount(mut dev: D) -> Result<Volume<D>> {
        let labels = read_labels(&mut dev)?;
        let block_size = labels.label().block_size as usize;
        let max = dev
            .max_block_size()
            .map_err(super::dev_err("reading the drive's block limits"))?;
        if block_size == 0 || block_size > max {
            return Err(VolumeError::BlockSize {
                size: block_size,
                max,
            });
        }
        let (ip, dp) = (labels.index_partition(), labels.data_partition());
        let capacity = read_capacity(&mut dev);
        let medium = medium_of(&labels, block_size, capacity);
        let found = match fast_path(&mut dev, &labels, ip, dp, block_size, &medium) {
            Some(f) => f,
            None => full_scan(&mut dev, &labels, ip, dp, block_size, &medium)?,
        };
        let stale = !matches!(found.current, CurrentIndex::IndexPartition);
        Ok(Volume {
            dev,
            labels,
            block_size,
            ip,
            dp,
            index: found.index,
            dirty: false,
            eod: found.eod,
            last: found.last,
            ends_in_index: found.ends_in_index,
            dp_needs_fm: found.dp_needs_fm,
            report: MountReport {
                fast_path: found.fast,
                current: found.current,
                extra_blocks: found.report_extra,
                missing_trailing_fm: found.missing_fm,
                rejected: found.rejected,
                index_partition_stale: stale,
            },
            sync: SyncPolicy::default(),
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            full: false,
            wrote: false,
            creator: creator(),
            capacity,
            packed: None,
            packed_last: None,
        })
    }
}

/// Checks that partition `p` ends exactly in an index construct starting at `set_id`: a FM just before
/// EOD and the FM before that at `set_id − 1` (data extents hold no FMs). Returns the EOD.
fn ends_at<D: TapeDevice>(dev: &mut D, p: u8, set_id: u64) -> Option<u64> {
    dev.locate_eod(p).ok()?;
    let eod = dev.position().ok()?.block;
    if set_id < 5 || eod < set_id + 2 {
        return None;
    }
    dev.space_filemarks(-1).ok()?;
    if dev.position().ok()?
        != (Position {
            partition: p,
            block: eod - 1,
        })
    {
        return None;
    }
    dev.space_filemarks(-1).ok()?;
    (dev.position().ok()?
        == Position {
            partition: p,
            block: set_id - 1,
        })
    .then_some(eod)
}

/// The MAM fast path (§5), trusted only when the coherency records agree with the VCR and the UUID,
/// both partitions end in an index construct where the records say, and the index read there passes
/// the usual checks. Anything else: `None` (full scan).
fn fast_path<D: TapeDevice>(
    dev: &mut D,
    labels: &VolumeLabels,
    ip: u8,
    dp: u8,
    block_size: usize,
    medium: &Medium,
) -> Option<Found> {
    let vcr = dev.read_attribute(0, ATTR_VOLUME_CHANGE_REFERENCE).ok()??;
    let mut coh = |p: u8| {
        dev.read_attribute(p, ATTR_VOLUME_COHERENCY)
            .ok()
            .flatten()
            .and_then(|a| coherency::VolumeCoherency::from_attribute(&a).ok())
    };
    let (ipc, dpc) = (coh(ip)?, coh(dp)?);
    let fp = coherency::fast_path(
        Some(&vcr.value),
        Some(&ipc),
        Some(&dpc),
        &labels.label().volume_uuid,
    )?;
    let mut eod = [0u64; 2];
    eod[ip as usize] = ends_at(dev, ip, ipc.set_id)?;
    eod[dp as usize] = ends_at(dev, dp, dpc.set_id)?;
    let p = match fp.role {
        PartitionRole::Index => ip,
        PartitionRole::Data => dp,
    };
    let at = Position {
        partition: p,
        block: fp.set_id,
    };
    dev.locate(at).ok()?;
    let (index, x) = read_index(dev, block_size, INDEX_READ_LIMIT, |r| {
        parse_at(r, at, labels, medium)
    })
    .ok()?
    .ok()?;
    if !x.trailing_fm || x.end_block() != eod[p as usize] {
        return None;
    }
    if index.generation != fp.generation {
        return None;
    }
    let dp_id = labels.labels[dp as usize].location;
    let current = if p == ip {
        // The IP index is current only if it points back to the DP's last index.
        if index.previous
            != Some(IndexLocation {
                partition: dp_id,
                start_block: dpc.set_id,
            })
            || index.generation < dpc.count
        {
            return None;
        }
        CurrentIndex::IndexPartition
    } else {
        CurrentIndex::DataPartition
    };
    let mut last = [None, None];
    last[ip as usize] = Some(LastIndex {
        generation: ipc.count,
        start: ipc.set_id,
        backptr: (p == ip).then_some(dpc.set_id),
    });
    last[dp as usize] = Some(LastIndex {
        generation: dpc.count,
        start: dpc.set_id,
        backptr: if p == dp {
            index.previous.map(|l| l.start_block)
        } else {
            None
        },
    });
    Some(Found {
        index,
        current,
        eod,
        last,
        ends_in_index: [true, true],
        dp_needs_fm: false,
        report_extra: [0, 0],
        missing_fm: [false, false],
        rejected: Vec::new(),
        fast: true,
    })
}

fn full_scan<D: TapeDevice>(
    dev: &mut D,
    labels: &VolumeLabels,
    ip: u8,
    dp: u8,
    block_size: usize,
    medium: &Medium,
) -> Result<Found> {
    let mut scans = Vec::with_capacity(2);
    for p in [ip, dp] {
        scans.push(find_last_index(
            dev,
            p,
            block_size,
            INDEX_READ_LIMIT,
            |r, at| parse_at(r, at, labels, medium),
        )?);
    }
    let ptrs = |s: &crate::scan::PartitionScan<Index>| {
        s.found.as_ref().map(|f| IndexPointers {
            generation: f.index.generation,
            selfptr: (f.index.location.partition, f.index.location.start_block),
            backptr: f.index.previous.map(|b| (b.partition, b.start_block)),
        })
    };
    let current = choose_current(ptrs(&scans[0]).as_ref(), ptrs(&scans[1]).as_ref());
    // A complete index after a partition's last valid one that was refused is a newer state of the
    // volume: reading the older one instead would hide it. Say so, with what a rollback would give.
    let unusable = scans
        .iter()
        .find_map(|s| s.rejected.iter().find(|r| r.unusable_index));
    if let Some(r) = unusable {
        let chosen = match current {
            Ok(CurrentIndex::IndexPartition | CurrentIndex::OnlyIndexPartition) => {
                scans[0].found.as_ref()
            }
            Ok(CurrentIndex::DataPartition | CurrentIndex::OnlyDataPartition) => {
                scans[1].found.as_ref()
            }
            Err(_) => scans
                .iter()
                .filter_map(|s| s.found.as_ref())
                .max_by_key(|f| (f.index.generation, f.start.partition != dp)),
        };
        return Err(VolumeError::UnusableIndex {
            partition: r.start.partition,
            block: r.start.block,
            reason: r.reason.clone(),
            fallback: chosen.map(|f| (f.index.generation, f.index.location)),
        });
    }
    let current = current?;
    let mut eod = [0u64; 2];
    let mut last = [None, None];
    let mut ends_in_index = [false, false];
    let mut extra = [0u64; 2];
    let mut missing_fm = [false, false];
    let mut rejected = Vec::new();
    let mut dp_needs_fm = false;
    for s in &scans {
        let p = s.partition as usize;
        eod[p] = s.eod;
        extra[p] = s.extra_blocks();
        rejected.extend(s.rejected.iter().cloned());
        if let Some(f) = &s.found {
            last[p] = Some(LastIndex {
                generation: f.index.generation,
                start: f.start.block,
                backptr: f.index.previous.map(|b| b.start_block),
            });
            missing_fm[p] = !f.trailing_fm;
            ends_in_index[p] = f.trailing_fm && extra[p] == 0;
            if s.partition == dp && !f.trailing_fm && extra[p] == 0 {
                dp_needs_fm = true;
            }
        }
    }
    let sdp = scans.pop().expect("two scans");
    let sip = scans.pop().expect("two scans");
    let index = match current {
        CurrentIndex::IndexPartition | CurrentIndex::OnlyIndexPartition => sip.found,
        CurrentIndex::DataPartition | CurrentIndex::OnlyDataPartition => sdp.found,
    }
    .expect("choose_current picked a partition with an index")
    .index;
    Ok(Found {
        index,
        current,
        eod,
        last,
        ends_in_index,
        dp_needs_fm,
        report_extra: extra,
        missing_fm,
        rejected,
        fast: false,
    })
}
