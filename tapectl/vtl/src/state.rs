//! `library.json`: the spec, element contents, per-drive state and faults. Every change is a
//! read-modify-write under an exclusive `flock` on `library.lock`, written atomically (temp file + rename).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    FIRST_DRIVE_ADDRESS, FIRST_IE_ADDRESS, FIRST_STORAGE_ADDRESS, Fault, LibrarySpec, VtlError,
};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub format: u32,
    pub spec: LibrarySpec,
    pub storage: Vec<Option<Slot>>,
    pub ie: Vec<Option<Slot>>,
    pub drives: Vec<DriveState>,
    #[serde(default)]
    pub faults: Vec<FaultEntry>,
    /// Incremented at every operator door event (insert/remove); changer handles compare.
    #[serde(default)]
    pub door_events: u64,
    /// Unit attentions queued for the changer (ASC, ASCQ), delivered once to whichever handle asks first.
    #[serde(default)]
    pub changer_ua: VecDeque<[u8; 2]>,
    /// PREVENT MEDIUM REMOVAL on the changer: the operator door is locked.
    #[serde(default)]
    pub door_locked: bool,
    /// Source of per-load sequence numbers.
    #[serde(default)]
    pub load_counter: u64,
    /// This library's own identifier, random at create (8 hex digits). Drive serials are made from it,
    /// so two libraries never share a drive serial (tapectl locks drives by serial) even when their
    /// specs, changer serial included, are the same. Libraries created before it existed have none and
    /// keep the serials they had, made from the changer serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Slot {
    pub barcode: String,
    /// Element address the cartridge was last moved from (SValid).
    #[serde(default)]
    pub source: Option<u16>,
    /// Placed by the operator (I/E ImpExp bit), not by the transport.
    #[serde(default)]
    pub imported: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DriveState {
    pub loaded: Option<Loaded>,
    /// Unit attentions (ASC, ASCQ) for the drive's next commands.
    pub pending_ua: VecDeque<[u8; 2]>,
    /// PREVENT MEDIUM REMOVAL on the drive.
    pub prevent: bool,
    /// TapeAlert flags set by events (bit n-1 = flag n); cleared when page 0x2E is read.
    pub tapealert: u64,
    /// Data compression (mode page 0x0F DCE).
    pub compression: Option<bool>,
    /// Partitioning requested with MODE SELECT page 0x11, used by FORMAT MEDIUM.
    pub partition_request: Option<PartitionRequest>,
}

impl DriveState {
    pub fn compression(&self) -> bool {
        self.compression.unwrap_or(true)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub barcode: String,
    /// The slot the cartridge came from.
    pub source: Option<u16>,
    pub threaded: bool,
    pub partition: u8,
    pub block: u64,
    /// Last write position (partition, block after the last record or filemark written).
    #[serde(default)]
    pub last_write: Option<(u8, u64)>,
    /// Changes with every load (move into the drive or LOAD after UNLOAD).
    pub load_seq: u64,
    /// Changes whenever a drive handle changed the cartridge's records (another handle must rescan).
    #[serde(default)]
    pub version: u64,
    /// The volume change reference was already incremented during this load.
    #[serde(default)]
    pub vcr_bumped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PartitionRequest {
    pub additional: u8,
    pub fdp: bool,
    pub sdp: bool,
    pub idp: bool,
    pub psum: u8,
    pub units: u8,
    pub sizes: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FaultEntry {
    pub fault: Fault,
    /// Unix seconds when it was set.
    pub set_at: u64,
}

impl State {
    pub fn new(spec: LibrarySpec) -> State {
        State {
            format: FORMAT,
            storage: vec![None; spec.storage_slots as usize],
            ie: vec![None; spec.ie_slots as usize],
            drives: vec![DriveState::default(); spec.drives.len()],
            spec,
            faults: Vec::new(),
            door_events: 0,
            changer_ua: VecDeque::new(),
            door_locked: false,
            load_counter: 0,
            id: None,
        }
    }

    /// The serial number of drive `index` (INQUIRY VPD 0x80, DVCID).
    pub fn drive_serial(&self, index: usize) -> String {
        crate::drive_serial(self.id.as_deref().unwrap_or(&self.spec.serial), index)
    }

    /// Every barcode inside the library with a human description of where it is.
    pub fn barcodes_inside(&self) -> Vec<(&str, String)> {
        let mut v = Vec::new();
        for (i, s) in self.storage.iter().enumerate() {
            if let Some(s) = s {
                v.push((
                    s.barcode.as_str(),
                    format!(
                        "storage slot {} (element {:#06x})",
                        i + 1,
                        FIRST_STORAGE_ADDRESS + i as u16
                    ),
                ));
            }
        }
        for (i, s) in self.ie.iter().enumerate() {
            if let Some(s) = s {
                v.push((
                    s.barcode.as_str(),
                    format!(
                        "import/export slot {} (element {:#06x})",
                        i + 1,
                        FIRST_IE_ADDRESS + i as u16
                    ),
                ));
            }
        }
        for (i, d) in self.drives.iter().enumerate() {
            if let Some(l) = &d.loaded {
                v.push((
                    l.barcode.as_str(),
                    format!(
                        "drive {i} (element {:#06x})",
                        FIRST_DRIVE_ADDRESS + i as u16
                    ),
                ));
            }
        }
        v
    }

    /// Drops NotReadyFor faults that have run out and turns UnitAttention faults into queued unit
    /// attentions (they are delivered once).
    pub fn settle_faults(&mut self, now: u64) {
        let mut i = 0;
        while i < self.faults.len() {
            let e = &self.faults[i];
            match e.fault {
                Fault::NotReadyFor { seconds, .. } if e.set_at.saturating_add(seconds) <= now => {
                    self.faults.remove(i);
                }
                Fault::UnitAttention { drive } => {
                    match drive {
                        Some(d) => {
                            if let Some(ds) = self.drives.get_mut(d) {
                                ds.pending_ua.push_back([0x29, 0x00]);
                            }
                        }
                        None => self.changer_ua.push_back([0x29, 0x00]),
                    }
                    self.faults.remove(i);
                }
                _ => i += 1,
            }
        }
    }

    pub fn becoming_ready(&self, drive: usize, now: u64) -> bool {
        self.faults.iter().any(|e| {
            matches!(e.fault, Fault::NotReadyFor { drive: d, seconds } if d == drive && e.set_at.saturating_add(seconds) > now)
        })
    }

    pub fn needs_cleaning(&self, drive: usize) -> bool {
        self.faults
            .iter()
            .any(|e| matches!(e.fault, Fault::NeedsCleaning { drive: d } if d == drive))
    }

    /// The TapeAlert flags of a drive: latched event flags plus those faults imply.
    pub fn tapealert(&self, drive: usize, _now: u64) -> u64 {
        let mut f = self.drives.get(drive).map_or(0, |d| d.tapealert);
        if self.needs_cleaning(drive) {
            f |= crate::util::ta_bit(0x14);
        }
        f
    }
}

pub(crate) fn state_path(dir: &Path) -> PathBuf {
    dir.join("library.json")
}

/// A new library identifier: 32 random bits as 8 hex digits.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let v = if n == b.len() as isize {
        u32::from_ne_bytes(b)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        t ^ std::process::id().rotate_left(16)
    };
    format!("{v:08X}")
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join("library.lock")
}

/// An exclusive (or shared) flock held until dropped.
struct Lock(#[allow(dead_code)] File);

fn lock(dir: &Path, exclusive: bool) -> Result<Lock, VtlError> {
    let p = lock_path(dir);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| VtlError::io(&p, e))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: flock on a file descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(Lock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(VtlError::io(&p, e));
        }
    }
}

fn load(dir: &Path) -> Result<(State, Vec<u8>), VtlError> {
    let p = state_path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VtlError::NotALibrary {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(VtlError::io(&p, e)),
    };
    let st: State = serde_json::from_slice(&bytes).map_err(|e| VtlError::Corrupt {
        path: p.clone(),
        message: e.to_string(),
    })?;
    if st.format != FORMAT {
        return Err(VtlError::Corrupt {
            path: p,
            message: format!("unknown format {} (this build reads {FORMAT})", st.format),
        });
    }
    if st.drives.len() != st.spec.drives.len()
        || st.storage.len() != st.spec.storage_slots as usize
        || st.ie.len() != st.spec.ie_slots as usize
    {
        return Err(VtlError::Corrupt {
            path: p,
            message: "element counts do not match the spec".into(),
        });
    }
    Ok((st, bytes))
}

fn store(dir: &Path, bytes: &[u8]) -> Result<(), VtlError> {
    let p = state_path(dir);
    let tmp = dir.join(format!(".library.json.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| VtlError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| VtlError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &p).map_err(|e| VtlError::io(&p, e))
}

pub(crate) fn create(dir: &Path, st: &State) -> Result<(), VtlError> {
    let _l = lock(dir, true)?;
    if state_path(dir).exists() {
        return Err(VtlError::AlreadyExists {
            dir: dir.to_path_buf(),
        });
    }
    let bytes = serde_json::to_vec_pretty(st).map_err(|e| VtlError::Corrupt {
        path: state_path(dir),
        message: e.to_string(),
    })?;
    store(dir, &bytes)
}

pub(crate) fn read(dir: &Path) -> Result<State, VtlError> {
    let _l = lock(dir, false)?;
    Ok(load(dir)?.0)
}

/// Runs `f` on the state under the exclusive lock and writes the state back if it changed.
pub(crate) fn transact<R>(dir: &Path, f: impl FnOnce(&mut State) -> R) -> Result<R, VtlError> {
    let _l = lock(dir, true)?;
    transact_locked(dir, f)
}

fn transact_locked<R>(dir: &Path, f: impl FnOnce(&mut State) -> R) -> Result<R, VtlError> {
    let (mut st, before) = load(dir)?;
    let r = f(&mut st);
    let after = serde_json::to_vec_pretty(&st).map_err(|e| VtlError::Corrupt {
        path: state_path(dir),
        message: e.to_string(),
    })?;
    if after != before {
        store(dir, &after)?;
    }
    Ok(r)
}

/// Identifies one version of `library.json`: every write replaces the file (new inode) and sets its
/// mtime, so a different identity means someone changed the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateId {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
}

pub(crate) fn state_id(path: &Path) -> Option<StateId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(StateId {
        dev: m.dev(),
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        size: m.size(),
    })
}

/// What of the state one drive's streamed READ/WRITE depend on: its own entry (cartridge, position,
/// version) and the faults. Another drive's streaming or a changer move elsewhere leaves it alone.
pub(crate) fn drive_view(st: &State, drive: usize) -> Vec<u8> {
    serde_json::to_vec(&(st.drives.get(drive), &st.faults)).unwrap_or_default()
}

/// The state's [`drive_view`] of `drive` and the identity of `library.json`, read under the shared
/// lock.
pub(crate) fn read_view(dir: &Path, drive: usize) -> Result<(Vec<u8>, Option<StateId>), VtlError> {
    let _l = lock(dir, false)?;
    let (st, _) = load(dir)?;
    Ok((drive_view(&st, drive), state_id(&state_path(dir))))
}

/// [`transact`], also returning the identity of `library.json` as the transaction left it.
pub(crate) fn transact_id<R>(
    dir: &Path,
    f: impl FnOnce(&mut State) -> R,
) -> Result<(R, Option<StateId>), VtlError> {
    let _l = lock(dir, true)?;
    let r = transact_locked(dir, f)?;
    Ok((r, state_id(&state_path(dir))))
}
