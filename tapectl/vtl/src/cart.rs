//! A cartridge directory in the LTFS reference implementation's file-backend layout
//! (`<p>_<blk>_R|F|E`, `attr_<p>_<id hex>`, `filedebug_tc_conf.xml`) plus `rackvault-cartridge.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::{CLEANING_USES, DriveModel, VtlError, is_cleaning_barcode};

pub(crate) const META_FILE: &str = "rackvault-cartridge.json";
pub(crate) const CONF_FILE: &str = "filedebug_tc_conf.xml";
pub(crate) const MIB: u64 = 1 << 20;

/// `rackvault-cartridge.json`: what the file backend has no place for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CartMeta {
    pub barcode: String,
    pub generation: DriveModel,
    /// Native capacity of the whole cartridge, MiB.
    pub capacity_mb: u64,
    /// Number of partitions (1 when fresh, 2..4 after FORMAT MEDIUM with partitioning).
    pub partitions: u8,
    /// Size of each partition in MiB (sums to at most `capacity_mb`).
    pub partition_mb: Vec<u64>,
    pub write_protected: bool,
    pub cleaning: bool,
    #[serde(default)]
    pub cleaning_uses_left: u32,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Thread count (volume statistics "volume mounts").
    #[serde(default)]
    pub mounts: u64,
    #[serde(default)]
    pub bytes_written: u64,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub records_written: u64,
    #[serde(default)]
    pub records_read: u64,
    #[serde(default)]
    pub last_mount_bytes_written: u64,
    #[serde(default)]
    pub last_mount_bytes_read: u64,
}

impl CartMeta {
    pub fn new(
        barcode: &str,
        generation: DriveModel,
        capacity_mb: u64,
        write_protected: bool,
    ) -> CartMeta {
        let cleaning = is_cleaning_barcode(barcode);
        CartMeta {
            barcode: barcode.to_string(),
            generation,
            capacity_mb,
            partitions: 1,
            partition_mb: vec![capacity_mb],
            write_protected,
            cleaning,
            cleaning_uses_left: if cleaning { CLEANING_USES } else { 0 },
            created: crate::util::now_secs(),
            mounts: 0,
            bytes_written: 0,
            bytes_read: 0,
            records_written: 0,
            records_read: 0,
            last_mount_bytes_written: 0,
            last_mount_bytes_read: 0,
        }
    }

    pub fn partition_bytes(&self, p: usize) -> u64 {
        self.partition_mb
            .get(p)
            .copied()
            .unwrap_or(0)
            .saturating_mul(MIB)
    }
}

pub(crate) fn meta_path(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

pub(crate) fn load_meta(dir: &Path) -> Result<CartMeta, VtlError> {
    let p = meta_path(dir);
    if !p.exists()
        && let Some(m) = import_foreign(dir)?
    {
        return Ok(m);
    }
    let b = fs::read(&p).map_err(|e| VtlError::io(&p, e))?;
    let mut m: CartMeta = serde_json::from_slice(&b).map_err(|e| VtlError::Corrupt {
        path: p.clone(),
        message: e.to_string(),
    })?;
    if m.partitions == 0 || m.partitions > 4 || m.partition_mb.len() != m.partitions as usize {
        return Err(VtlError::Corrupt {
            path: p,
            message: "partition count and sizes disagree".into(),
        });
    }
    m.capacity_mb = m.capacity_mb.max(1);
    Ok(m)
}

/// Import of a foreign cartridge: a directory in the file-backend layout without
/// `rackvault-cartridge.json` (made by `mkltfs -e file`, by another LTFS implementation, or by hand as
/// ltfs-format.md §7 describes). The meta is derived the way the reference backend sees such a
/// directory and saved, so this happens once; the records, filemarks and attributes are not touched.
///
/// * partitions: 1 + the highest physical partition holding a record or filemark (`<p>_<blk>_R|F`),
///   at most 4; like the reference, a partition 1 without objects means a one-partition tape;
/// * from `filedebug_tc_conf.xml` when present: `capacity_mb` (else the reference default 3072),
///   `cart_type` `L5`..`L9` (else the barcode's `Ln` suffix, else `L5`, the type the reference's
///   directory mode emulates), `emulate_readonly` = write protected; a missing conf is written;
/// * partition sizes: 5 % of the capacity for each partition but the last, the rest last (the
///   reference's split), each at least what its records already hold;
/// * the barcode is the directory's name.
///
/// Returns `None` when `dir` holds nothing of the layout (no records, filemarks, EOD or conf).
pub(crate) fn import_foreign(dir: &Path) -> Result<Option<CartMeta>, VtlError> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut seen = false;
    let mut top: Option<usize> = None;
    for e in rd {
        let e = e.map_err(|err| VtlError::io(dir, err))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == CONF_FILE {
            seen = true;
        }
        if let Some((p, _, kind)) = parse_rec_name(name) {
            seen = true;
            if matches!(kind, 'R' | 'F') {
                top = top.max(Some(p));
            }
        }
    }
    if !seen {
        return Ok(None);
    }
    let partitions = top.map_or(1, |p| p + 1);
    if partitions > 4 {
        return Err(VtlError::Corrupt {
            path: dir.to_path_buf(),
            message: format!(
                "records on physical partition {}: LTO has at most 4",
                partitions - 1
            ),
        });
    }
    let barcode = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let conf = fs::read_to_string(dir.join(CONF_FILE)).ok();
    let tag = |t: &str| -> Option<String> {
        let c = conf.as_deref()?;
        let from = c.find(&format!("<{t}>"))? + t.len() + 2;
        let to = from + c[from..].find(&format!("</{t}>"))?;
        Some(c[from..to].trim().to_string())
    };
    let capacity_mb = tag("capacity_mb")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(3072);
    let cart_type = tag("cart_type");
    let generation = cart_type
        .as_deref()
        .and_then(|t| t.strip_prefix('L'))
        .and_then(|g| g.parse::<u8>().ok())
        .and_then(DriveModel::from_generation)
        .or_else(|| crate::generation_from_barcode(&barcode))
        .unwrap_or(DriveModel::Lto5);
    let write_protected = tag("emulate_readonly").is_some_and(|v| v == "true" || v == "1");
    let mut m = CartMeta::new(&barcode, generation, capacity_mb, write_protected);
    if cart_type.as_deref() == Some("CLN") && !m.cleaning {
        m.cleaning = true;
        m.cleaning_uses_left = CLEANING_USES;
    }
    let scans = scan(dir, partitions)?;
    let small = (capacity_mb * 5 / 100).max(1);
    let mut sizes: Vec<u64> = (0..partitions)
        .map(|p| {
            let want = if p + 1 < partitions {
                small
            } else {
                capacity_mb
                    .saturating_sub(small * (partitions as u64 - 1))
                    .max(1)
            };
            want.max(scans[p].bytes.div_ceil(MIB) + 1)
        })
        .collect();
    if partitions == 1 {
        sizes = vec![capacity_mb.max(scans[0].bytes.div_ceil(MIB) + 1)];
    }
    m.capacity_mb = m.capacity_mb.max(sizes.iter().sum());
    m.partitions = partitions as u8;
    m.partition_mb = sizes;
    tracing::info!(cartridge = %dir.display(), partitions, capacity_mb = m.capacity_mb, generation = ?m.generation, "imported a foreign cartridge directory (no {META_FILE})");
    if conf.is_none() {
        write_conf(dir, &m)?;
    }
    save_meta(dir, &m)?;
    Ok(Some(m))
}

pub(crate) fn save_meta(dir: &Path, m: &CartMeta) -> Result<(), VtlError> {
    let p = meta_path(dir);
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| VtlError::Corrupt {
        path: p.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&p, &bytes)
}

/// Replaces `p` with `bytes` through a temporary file and a rename, so a crash leaves the old contents
/// or the new, never a partial file.
pub(crate) fn write_atomic(p: &Path, bytes: &[u8]) -> Result<(), VtlError> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let dir = p.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir, name);
    let r = File::create_new(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| VtlError::io(&tmp, e));
    crate::crash::step();
    if let Err(e) = r.and_then(|()| fs::rename(&tmp, p).map_err(|e| VtlError::io(p, e))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    crate::crash::step();
    Ok(())
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A new temporary file name in `dir`: `.<what>.<pid>-<n>.tmp`. Hidden and unlike any name of the
/// layout, so neither the reference backend nor a scan ever takes it for a record; the pid says whose
/// it is, for [`remove_stale_temps`].
pub(crate) fn temp_path(dir: &Path, what: &str) -> PathBuf {
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{what}.{}-{n}.tmp", std::process::id()))
}

/// The pid in a name made by [`temp_path`] (or by earlier versions: `.<what>.<pid>.tmp`).
fn temp_owner(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tail) = inner.rsplit_once('.')?;
    let pid = tail.split_once('-').map_or(tail, |(pid, _)| pid);
    if pid.is_empty() || !pid.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes temporary files that processes which no longer exist left in a cartridge directory (a
/// record being written, a pre-created file, an attribute being replaced). Live processes' files are
/// theirs to finish or remove.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if !process_alive(pid) {
            match fs::remove_file(e.path()) {
                Ok(()) => crate::crash::step(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), "could not remove a temporary file a dead process left: {err}")
                }
            }
        }
    }
}

/// `filedebug_tc_conf.xml`, as the reference backend writes it (4-space indent, libxml2 style).
pub(crate) fn write_conf(dir: &Path, m: &CartMeta) -> Result<(), VtlError> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filedebug_cartridge_config>\n    <dummy_io>false</dummy_io>\n    \
         <emulate_readonly>{}</emulate_readonly>\n    <capacity_mb>{}</capacity_mb>\n    <cart_type>{}</cart_type>\n    \
         <density_code>{:x}</density_code>\n    <delay_mode>None</delay_mode>\n    <wraps>40</wraps>\n    \
         <eot_to_bot_sec>12</eot_to_bot_sec>\n    <change_direction_us>2000000</change_direction_us>\n    \
         <change_track_us>10000</change_track_us>\n    <threading_sec>12</threading_sec>\n</filedebug_cartridge_config>\n",
        m.write_protected,
        m.capacity_mb,
        if m.cleaning {
            "CLN"
        } else {
            m.generation.cart_type()
        },
        m.generation.density_code(),
    );
    write_atomic(&dir.join(CONF_FILE), xml.as_bytes())
}

/// Makes a fresh cartridge: one empty partition (`0_0_E`), VCR 1, conf and meta.
pub(crate) fn create(dir: &Path, m: &CartMeta) -> Result<(), VtlError> {
    fs::create_dir_all(dir).map_err(|e| VtlError::io(dir, e))?;
    let e = rec_path(dir, 0, 0, 'E');
    File::create(&e).map_err(|err| VtlError::io(&e, err))?;
    write_vcr(dir, 1)?;
    write_conf(dir, m)?;
    save_meta(dir, m)
}

/// The cartridges directory's barcodes (subdirectories holding a meta file).
pub(crate) fn list_cartridges(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().join(META_FILE).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

pub(crate) fn rec_path(dir: &Path, p: usize, blk: u64, kind: char) -> PathBuf {
    dir.join(format!("{p}_{blk}_{kind}"))
}

pub(crate) fn attr_path(dir: &Path, p: usize, id: u16) -> PathBuf {
    dir.join(format!("attr_{p}_{id:x}"))
}

/// The volume change reference (attribute 0x0009 in `attr_0_9`, 4-byte value).
pub(crate) fn read_vcr(dir: &Path) -> Option<u32> {
    let b = fs::read(attr_path(dir, 0, 0x0009)).ok()?;
    let v = b.get(5..)?;
    match v.len() {
        4 => Some(u32::from_be_bytes(v.try_into().ok()?)),
        8 => Some(u64::from_be_bytes(v.try_into().ok()?) as u32),
        _ => None,
    }
}

pub(crate) fn write_vcr(dir: &Path, v: u32) -> Result<(), VtlError> {
    let mut b = vec![0x00, 0x09, 0x00, 0x00, 0x04];
    b.extend_from_slice(&v.to_be_bytes());
    write_atomic(&attr_path(dir, 0, 0x0009), &b)
}

/// Host attributes stored as `attr_<p>_<id>` (id ≥ 0x0800), raw file contents (header + value).
pub(crate) fn list_attrs(dir: &Path, partition: usize) -> BTreeMap<u16, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let prefix = format!("attr_{partition}_");
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Ok(id) = u16::from_str_radix(hex, 16) else {
            continue;
        };
        if id < 0x0800 {
            continue;
        }
        if let Ok(b) = fs::read(e.path())
            && b.len() >= 5
        {
            out.insert(id, b);
        }
    }
    out
}

/// What a scan of one partition found, read the way the reference backend reads it
/// (`filedebug_search_eod()`): from block 0, records and filemarks up to the first block that holds an
/// `_E` or neither a record nor a filemark. A filemark wins over a record at the same block.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartScan {
    /// First block that is not a record or filemark.
    pub eod: u64,
    /// `<p>_<eod>_E` exists, so the partition is a valid image as it is.
    pub has_marker: bool,
    pub filemarks: BTreeSet<u64>,
    /// Records below EOD that are encrypted: they have a sidecar `<p>_<blk>_K` (see the README).
    pub encrypted: BTreeSet<u64>,
    /// Sum of record sizes below EOD.
    pub bytes: u64,
    /// Files no reader can reach: records, filemarks and markers at or beyond EOD other than its
    /// marker (a write a crash interrupted, records beyond a gap, stray markers), and empty `_R` files
    /// (never a record).
    pub garbage: Vec<(u64, char)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BlockFiles {
    record: Option<u64>,
    filemark: bool,
    marker: bool,
    sidecar: bool,
}

/// Scans a cartridge directory. Partitions beyond `partitions` are ignored.
pub(crate) fn scan(dir: &Path, partitions: usize) -> Result<Vec<PartScan>, VtlError> {
    let mut blocks: Vec<BTreeMap<u64, BlockFiles>> = vec![BTreeMap::new(); partitions];
    let rd = fs::read_dir(dir).map_err(|e| VtlError::io(dir, e))?;
    for e in rd {
        let e = e.map_err(|err| VtlError::io(dir, err))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((p, blk, kind)) = parse_rec_name(name) else {
            continue;
        };
        if p >= partitions {
            continue;
        }
        let b = blocks[p].entry(blk).or_default();
        match kind {
            'E' => b.marker = true,
            'F' => b.filemark = true,
            'K' => b.sidecar = true,
            _ => {
                let size = e
                    .metadata()
                    .map_err(|err| VtlError::io(e.path(), err))?
                    .len();
                b.record = Some(size);
            }
        }
    }
    let mut out = Vec::with_capacity(partitions);
    for map in blocks {
        let mut s = PartScan::default();
        let mut next = 0u64;
        loop {
            let b = map.get(&next).copied().unwrap_or_default();
            if b.marker {
                s.has_marker = true;
                break;
            }
            if b.filemark {
                s.filemarks.insert(next);
            } else if let Some(size) = b.record.filter(|&n| n > 0) {
                s.bytes += size;
                if b.sidecar {
                    s.encrypted.insert(next);
                }
            } else {
                break;
            }
            next += 1;
        }
        s.eod = next;
        for (&blk, b) in &map {
            if blk < s.eod {
                // Before EOD only an empty record shadowed by a filemark can be garbage, and a
                // sidecar beside no record.
                if b.record == Some(0) {
                    s.garbage.push((blk, 'R'));
                }
                if b.sidecar && !s.encrypted.contains(&blk) {
                    s.garbage.push((blk, 'K'));
                }
                continue;
            }
            if b.sidecar {
                s.garbage.push((blk, 'K'));
            }
            if b.record.is_some() {
                s.garbage.push((blk, 'R'));
            }
            if b.filemark {
                s.garbage.push((blk, 'F'));
            }
            if b.marker && !(blk == s.eod && s.has_marker) {
                s.garbage.push((blk, 'E'));
            }
        }
        out.push(s);
    }
    Ok(out)
}

pub(crate) fn parse_rec_name(name: &str) -> Option<(usize, u64, char)> {
    let mut it = name.splitn(3, '_');
    let p = it.next()?;
    let blk = it.next()?;
    let kind = it.next()?;
    if p.is_empty()
        || !p.bytes().all(|c| c.is_ascii_digit())
        || blk.is_empty()
        || !blk.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let kind = match kind {
        "R" => 'R',
        "F" => 'F',
        "E" => 'E',
        // Not the reference backend's: the sidecar of an encrypted record (its reader ignores it).
        "K" => 'K',
        _ => return None,
    };
    Some((p.parse().ok()?, blk.parse().ok()?, kind))
}

/// A handle's hold on a cartridge directory: a shared flock on `.<barcode>.lock` beside it (not in
/// it: the directory stays the reference file backend's layout). `true` when this handle could
/// take it exclusively first: no other handle, in any process, has the cartridge open, so the
/// directory can be repaired (what a crashed writer left). Otherwise another handle may be in the
/// middle of a write run (records renamed in ahead of the end-of-data marker), and what looks like
/// damage is its work: nothing is repaired.
pub(crate) fn hold(dir: &Path) -> Result<(File, bool), VtlError> {
    use std::os::fd::AsRawFd;
    let name = dir
        .file_name()
        .map(|n| format!(".{}.lock", n.to_string_lossy()))
        .unwrap_or_else(|| ".cartridge.lock".into());
    let p = dir.with_file_name(name);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| VtlError::io(&p, e))?;
    // SAFETY: flock on a descriptor we own.
    let alone = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok((f, alone))
}

/// Lets other handles open the cartridge beside this one (after any repair).
pub(crate) fn share(dir: &Path, f: &File) -> Result<(), VtlError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; converting to shared, or waiting while another
    // handle holds it exclusively for the moment of its own opening.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } != 0 {
        return Err(VtlError::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes the partition exactly valid, like a drive rebuilding EOD, one syscall at a time so that the
/// directory never gets worse: a missing marker is put at EOD (by moving a stray one there, or by
/// creating it), then the garbage beyond it goes. Nothing before EOD is touched, so records someone
/// else wrote and covered with their own marker stay. Returns true when something was repaired.
pub(crate) fn repair(dir: &Path, p: usize, s: &mut PartScan) -> Result<bool, VtlError> {
    let mut repaired = false;
    if !s.has_marker {
        let target = rec_path(dir, p, s.eod, 'E');
        match s.garbage.iter().position(|&(_, k)| k == 'E') {
            Some(i) => {
                let (blk, _) = s.garbage.remove(i);
                let from = rec_path(dir, p, blk, 'E');
                fs::rename(&from, &target).map_err(|e| VtlError::io(&from, e))?;
            }
            None => {
                File::create(&target).map_err(|e| VtlError::io(&target, e))?;
            }
        }
        crate::crash::step();
        tracing::warn!(cartridge = %dir.display(), partition = p, eod = s.eod, "end-of-data marker missing (interrupted write); rebuilt EOD after the last record");
        s.has_marker = true;
        repaired = true;
    }
    if !s.garbage.is_empty() {
        tracing::warn!(cartridge = %dir.display(), partition = p, eod = s.eod, files = s.garbage.len(), "removing files no reader can reach (beyond end of data, or empty records)");
        for (blk, kind) in std::mem::take(&mut s.garbage) {
            remove_if_exists(&rec_path(dir, p, blk, kind))?;
            crate::crash::step();
        }
        repaired = true;
    }
    Ok(repaired)
}

pub(crate) fn remove_if_exists(p: &Path) -> Result<(), VtlError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VtlError::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_rec_name("0_12_R"), Some((0, 12, 'R')));
        assert_eq!(parse_rec_name("1_0_E"), Some((1, 0, 'E')));
        assert_eq!(parse_rec_name("attr_0_9"), None);
        assert_eq!(parse_rec_name("0_x_R"), None);
        assert_eq!(parse_rec_name("0_1_RR"), None);
    }

    #[test]
    fn scan_and_repair() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        fs::write(dir.join("0_0_R"), b"abc").unwrap();
        fs::write(dir.join("0_1_F"), b"").unwrap();
        fs::write(dir.join("0_2_R"), b"de").unwrap();
        fs::write(dir.join("0_4_R"), b"orphan").unwrap();
        fs::write(dir.join("0_5_R"), b"").unwrap();
        fs::write(dir.join("0_7_E"), b"").unwrap();
        // No marker at EOD: the first gap ends the data; the stray marker is moved there.
        let mut s = scan(dir, 1).unwrap().remove(0);
        assert_eq!((s.eod, s.has_marker, s.bytes), (3, false, 5));
        assert_eq!(s.filemarks.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert!(repair(dir, 0, &mut s).unwrap());
        let names: BTreeSet<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: BTreeSet<String> = ["0_0_R", "0_1_F", "0_2_R", "0_3_E"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, want);
        let mut again = scan(dir, 1).unwrap().remove(0);
        assert!(again.has_marker && again.garbage.is_empty());
        assert!(!repair(dir, 0, &mut again).unwrap());

        // A marker wins over a record or filemark at its block, as in the reference backend: what
        // follows it is unreachable, and an empty record is never a record.
        fs::write(dir.join("0_1_E"), b"").unwrap();
        let s = scan(dir, 1).unwrap().remove(0);
        assert_eq!((s.eod, s.has_marker, s.bytes), (1, true, 3));
        assert_eq!(s.garbage, vec![(1, 'F'), (2, 'R'), (3, 'E')]);
    }

    #[test]
    fn sidecars_mark_encrypted_records_and_strays_are_garbage() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        fs::write(dir.join("0_0_R"), b"ciphertext").unwrap();
        fs::write(dir.join("0_0_K"), b"sidecar").unwrap();
        fs::write(dir.join("0_1_F"), b"").unwrap();
        fs::write(dir.join("0_1_K"), b"beside a filemark").unwrap();
        fs::write(dir.join("0_2_R"), b"plain").unwrap();
        fs::write(dir.join("0_3_E"), b"").unwrap();
        fs::write(dir.join("0_3_K"), b"a write a crash cut short").unwrap();
        let mut s = scan(dir, 1).unwrap().remove(0);
        assert_eq!(s.eod, 3);
        assert_eq!(s.encrypted.iter().copied().collect::<Vec<_>>(), vec![0]);
        let mut g = s.garbage.clone();
        g.sort();
        assert_eq!(g, vec![(1, 'K'), (3, 'K')]);
        assert!(repair(dir, 0, &mut s).unwrap());
        assert!(dir.join("0_0_K").exists());
        assert!(!dir.join("0_1_K").exists() && !dir.join("0_3_K").exists());
        assert_eq!(parse_rec_name("0_7_K"), Some((0, 7, 'K')));
    }

    #[test]
    fn temp_names() {
        let t = temp_path(Path::new("/x"), "rec");
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(name), Some(std::process::id()));
        assert_eq!(parse_rec_name(name), None);
        assert_eq!(temp_owner(".attr_0_9.123.tmp"), Some(123));
        assert_eq!(temp_owner(".x.abc.tmp"), None);
        assert_eq!(temp_owner("0_1_R"), None);
    }
}
