//! An LTO drive of the virtual TS3200 (SSC-4). The loaded cartridge is modelled in memory (position,
//! end of data, filemarks and bytes per partition) so that a stream of READ(6)/WRITE(6) commands costs one
//! open/read-or-write/close per record and nothing else; everything else is a short transaction on
//! `library.json`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use scsi::{Completion, DataDir, DeviceType, Inquiry, Sense, SenseKey, Transport, TransportError};

use crate::cart::{self, CartMeta, MIB};
use crate::state::{Loaded, PartitionRequest, State};
use crate::util::{
    self, ModeSenseCdb, bad_cdb, bad_opcode, bad_param, check, fail, illegal, parse_mode_sense,
    respond, ta_bit, u16_at, u24_at, u32_at, u64_at,
};
use crate::{DriveModel, Fault, Library, ReadOrWrite, VtlError};

/// Largest record READ BLOCK LIMITS reports and WRITE(6) accepts.
pub const MAX_BLOCK: usize = 0x80_0000;
/// WRITE FILEMARKS accepts at most this many filemarks per command (each is a file).
pub const MAX_FILEMARKS_PER_COMMAND: u32 = 1024;

/// An LTO drive. Implements [`scsi::Transport`].
pub struct VirtualDrive {
    lib: Library,
    index: usize,
    model: DriveModel,
    serial: String,
    media: Option<Media>,
    /// The loaded cartridge could not be opened (its directory is missing or corrupt).
    media_broken: bool,
    /// READ/WRITE may use the in-memory model without a state transaction while `library.json` is still
    /// the version the last transaction left (one stat per record instead of lock + parse).
    fast: Option<crate::state::StateId>,
    /// This drive's part of the state as the last transaction left it: when `library.json` changed
    /// but not there (another drive wrote, the changer moved another cartridge), the fast path holds.
    fast_view: Vec<u8>,
    state_file: PathBuf,
    /// The data encryption parameters the host set (SECURITY PROTOCOL OUT): in memory only, shared
    /// by this process's handles on the drive, and forgotten when the cartridge they were set for
    /// is unloaded (see [`crate::crypto::slot`]).
    crypto: std::sync::Arc<std::sync::Mutex<crate::crypto::Crypto>>,
}

struct Part {
    /// End of data: `<p>_<eod>_E` is on disk, always (see [`Media::move_eod`]).
    eod: u64,
    filemarks: BTreeSet<u64>,
    /// Encrypted records: they have a sidecar `<p>_<blk>_K`.
    encrypted: BTreeSet<u64>,
    bytes: u64,
    capacity: u64,
    /// First block written since the last sync point.
    unsynced_from: Option<u64>,
}

#[derive(Default)]
struct MediaFaults {
    write_protect: bool,
    early_warning: Vec<(u8, u64)>,
    end_of_medium: Vec<(u8, u64)>,
    errors: Vec<(u8, u64, ReadOrWrite)>,
}

impl MediaFaults {
    fn for_cartridge(st: &State, barcode: &str) -> MediaFaults {
        let mut f = MediaFaults::default();
        for e in &st.faults {
            match &e.fault {
                Fault::WriteProtect { barcode: b } if b == barcode => f.write_protect = true,
                Fault::EarlyWarningAt {
                    barcode: b,
                    partition,
                    bytes,
                } if b == barcode => f.early_warning.push((*partition, *bytes)),
                Fault::EndOfMediumAt {
                    barcode: b,
                    partition,
                    bytes,
                } if b == barcode => f.end_of_medium.push((*partition, *bytes)),
                Fault::MediumError {
                    barcode: b,
                    partition,
                    block,
                    on,
                } if b == barcode => f.errors.push((*partition, *block, *on)),
                _ => {}
            }
        }
        f
    }
    fn error_at(&self, p: usize, blk: u64, on: ReadOrWrite) -> bool {
        self.errors
            .iter()
            .any(|&(fp, fb, fo)| fp as usize == p && fb == blk && fo == on)
    }
}

struct Media {
    barcode: String,
    dir: PathBuf,
    load_seq: u64,
    version: u64,
    meta: CartMeta,
    meta_dirty: bool,
    parts: Vec<Part>,
    partition: usize,
    block: u64,
    /// The position last written to `library.json`; a different one there means another handle moved.
    persisted_pos: (u8, u64),
    threaded: bool,
    vcr_bumped: bool,
    last_write: Option<(u8, u64)>,
    /// Records or filemarks changed since the last persist.
    changed: bool,
    faults: MediaFaults,
    can_read: bool,
    can_write: bool,
    /// TapeAlert flags raised since the last persist.
    ta_events: u64,
    /// Creates the files of the next blocks while a stream of large records is written.
    precreate: crate::writer::Precreator,
    /// (partition, first block not yet advised) of the read-ahead window.
    read_ahead: (usize, u64),
    /// Records advised ahead, kept open for the read that follows. Only valid across consecutive
    /// fast-path reads: any other command clears it, since a write may replace those files.
    ahead: std::collections::VecDeque<(usize, u64, File)>,
    /// The directory no longer matches this model (an end-of-data marker was not where it should be,
    /// or a change failed half-way): the next command that is not streamed reads the directory again.
    stale: bool,
    /// The directory may hold sidecars (`_K`) beyond the model's encrypted records: a record written
    /// in clear first removes one at its block.
    sidecars: bool,
    /// This handle's hold on the cartridge (see [`cart::hold`]).
    _hold: File,
}

fn lock_crypto(
    c: &std::sync::Mutex<crate::crypto::Crypto>,
) -> std::sync::MutexGuard<'_, crate::crypto::Crypto> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `bytes` to `path` through a temporary file and a rename (the file never exists partial).
fn write_hidden(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let (tmp, mut f) = crate::writer::create_temp(dir)?;
    let r = f.write_all(bytes).and_then(|()| fs::rename(&tmp, path));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    crate::crash::step();
    r
}

fn io_fail(
    what: &str,
    path: &std::path::Path,
    e: &dyn std::fmt::Display,
    key: SenseKey,
    asc: u8,
    ascq: u8,
) -> Completion {
    tracing::error!(path = %path.display(), "{what} failed: {e}");
    fail(key, asc, ascq)
}

impl Media {
    fn open(
        dir: PathBuf,
        l: &Loaded,
        faults: MediaFaults,
        model: DriveModel,
    ) -> Result<Media, VtlError> {
        let (hold, alone) = cart::hold(&dir)?;
        let meta = cart::load_meta(&dir)?;
        if alone {
            cart::remove_stale_temps(&dir);
        }
        // The model comes from the directory as it is now: whoever wrote it last (this library, the
        // reference implementation's ltfsck, a person), its end-of-data markers say where the data ends.
        let mut scans = cart::scan(&dir, meta.partitions as usize)?;
        if alone {
            for (p, s) in scans.iter_mut().enumerate() {
                if cart::repair(&dir, p, s)? {
                    tracing::warn!(cartridge = %l.barcode, partition = p, eod = s.eod, "recovered end of data on load");
                }
            }
            if cart::read_vcr(&dir).is_none() {
                cart::write_vcr(&dir, 1)?;
            }
        }
        cart::share(&dir, &hold)?;
        let sidecars = scans
            .iter()
            .any(|s| !s.encrypted.is_empty() || s.garbage.iter().any(|g| g.1 == 'K'));
        let parts: Vec<Part> = scans
            .into_iter()
            .enumerate()
            .map(|(p, s)| Part {
                eod: s.eod,
                filemarks: s.filemarks,
                encrypted: s.encrypted,
                bytes: s.bytes,
                capacity: meta.partition_bytes(p),
                unsynced_from: None,
            })
            .collect();
        let partition = (l.partition as usize).min(parts.len() - 1);
        let block = l.block.min(parts[partition].eod);
        Ok(Media {
            barcode: l.barcode.clone(),
            dir,
            load_seq: l.load_seq,
            version: l.version,
            can_read: model.can_read(meta.generation),
            can_write: model.can_write(meta.generation),
            meta,
            meta_dirty: false,
            parts,
            partition,
            block,
            // Where this model starts: a clamped position is not a move of this handle's.
            persisted_pos: (partition as u8, block),
            threaded: l.threaded,
            vcr_bumped: l.vcr_bumped,
            last_write: l.last_write,
            changed: false,
            faults,
            ta_events: 0,
            precreate: Default::default(),
            read_ahead: (0, 0),
            ahead: Default::default(),
            stale: false,
            sidecars,
            _hold: hold,
        })
    }

    fn early_warning(&self, p: usize) -> u64 {
        let cap = self.parts[p].capacity;
        let margin = (cap / 50).max(MIB).min(cap / 2);
        let mut limit = cap - margin;
        for &(fp, b) in &self.faults.early_warning {
            if fp as usize == p {
                limit = limit.min(b);
            }
        }
        limit
    }

    fn end_of_medium(&self, p: usize) -> u64 {
        let mut limit = self.parts[p].capacity;
        for &(fp, b) in &self.faults.end_of_medium {
            if fp as usize == p {
                limit = limit.min(b);
            }
        }
        limit
    }

    fn past_early_warning(&self, p: usize) -> bool {
        self.parts[p].bytes >= self.early_warning(p)
    }

    fn write_protected(&self) -> bool {
        self.meta.write_protected || self.faults.write_protect
    }

    /// DATA PROTECT when the cartridge must not be written.
    fn write_refused(&mut self) -> Option<Completion> {
        if self.write_protected() {
            self.ta_events |= ta_bit(0x09);
            return Some(fail(SenseKey::DataProtect, 0x27, 0x00));
        }
        if !self.can_write {
            return Some(fail(SenseKey::DataProtect, 0x30, 0x05));
        }
        None
    }

    /// Reading a tape is sequential, but each record is a file of its own and the kernel's readahead stops
    /// at every file's end. Advise the next records (POSIX_FADV_WILLNEED) so a cold stream keeps the disk
    /// busy, like a drive's read buffer.
    fn read_ahead(&mut self, p: usize, blk: u64) {
        const WINDOW: u64 = 16;
        let (rp, next) = self.read_ahead;
        let continuing = rp == p && next > blk && next <= blk + 1 + WINDOW;
        if !continuing {
            self.ahead.clear();
        }
        let mut from = if continuing { next } else { blk + 1 };
        let to = (blk + 1 + WINDOW).min(self.parts[p].eod);
        while from < to {
            if !self.parts[p].filemarks.contains(&from)
                && let Ok(f) = File::open(self.rec(p, from, 'R'))
            {
                use std::os::fd::AsRawFd;
                // SAFETY: fadvise on a descriptor we own; it only schedules page-cache reads.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
                self.ahead.push_back((p, from, f));
            }
            from += 1;
        }
        self.read_ahead = (p, to.max(from));
    }

    fn forget_read_ahead(&mut self) {
        self.ahead.clear();
        self.read_ahead = (0, 0);
    }

    fn rec(&self, p: usize, blk: u64, kind: char) -> PathBuf {
        cart::rec_path(&self.dir, p, blk, kind)
    }

    fn bump_vcr(&mut self) {
        if self.vcr_bumped {
            return;
        }
        let v = cart::read_vcr(&self.dir).unwrap_or(1);
        let next = v.wrapping_add(1).max(1);
        if let Err(e) = cart::write_vcr(&self.dir, next) {
            tracing::warn!(cartridge = %self.barcode, "volume change reference not updated: {e}");
        }
        self.vcr_bumped = true;
    }

    /// Moves partition `p`'s end-of-data marker from block `from` to `to` with one rename, so the
    /// directory holds exactly one marker at every instant. Before the move everything from `to` on is
    /// already in place (moving forward) or becomes unreachable by it (moving back). A marker that is
    /// not where the model says means someone changed the directory behind the drive: nothing is
    /// touched and the model is read again at the next command.
    fn move_eod(&mut self, p: usize, from: u64, to: u64) -> Result<(), VtlError> {
        if from == to {
            return Ok(());
        }
        let (a, b) = (self.rec(p, from, 'E'), self.rec(p, to, 'E'));
        match fs::rename(&a, &b) {
            Ok(()) => {
                crate::crash::step();
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                if e.kind() == std::io::ErrorKind::NotFound {
                    return Err(VtlError::Corrupt {
                        path: a,
                        message: "the end-of-data marker is gone: the cartridge directory was changed while the cartridge was loaded; unload and load it".into(),
                    });
                }
                Err(VtlError::io(&a, e))
            }
        }
    }

    /// Logically erases partition `p` from block `at` on: first the end-of-data marker moves back to
    /// `at` (one rename: from then on what follows is unreachable), then those files are deleted.
    fn truncate(&mut self, p: usize, at: u64) -> Result<(), VtlError> {
        let eod = self.parts[p].eod;
        if at >= eod {
            return Ok(());
        }
        self.move_eod(p, eod, at)?;
        self.changed = true;
        let dropped = self.parts[p].filemarks.split_off(&at);
        let sealed = self.parts[p].encrypted.split_off(&at);
        let part = &mut self.parts[p];
        part.eod = at;
        if part.unsynced_from.is_some_and(|u| u >= at) {
            part.unsynced_from = None;
        }
        for blk in at..eod {
            let path = self.rec(p, blk, if dropped.contains(&blk) { 'F' } else { 'R' });
            if let Ok(md) = fs::metadata(&path) {
                self.parts[p].bytes = self.parts[p].bytes.saturating_sub(md.len());
            }
            if let Err(e) = cart::remove_if_exists(&path) {
                // Unreachable files are left behind; the next open of the cartridge removes them.
                self.stale = true;
                return Err(e);
            }
            crate::crash::step();
            if sealed.contains(&blk) {
                if let Err(e) = cart::remove_if_exists(&self.rec(p, blk, 'K')) {
                    self.stale = true;
                    return Err(e);
                }
                crate::crash::step();
            }
        }
        Ok(())
    }

    /// Ends a write run: the files pre-created for records that were not written go.
    fn finish_run(&mut self) {
        self.precreate.cancel();
    }

    /// A sync point: records written since the last one reach the disk, and the directory too.
    fn sync(&mut self) -> Result<(), VtlError> {
        self.precreate.cancel();
        for p in 0..self.parts.len() {
            let Some(from) = self.parts[p].unsynced_from.take() else {
                continue;
            };
            let eod = self.parts[p].eod;
            if eod.saturating_sub(from) <= 64 {
                for blk in from..eod {
                    if self.parts[p].filemarks.contains(&blk) {
                        continue;
                    }
                    let path = self.rec(p, blk, 'R');
                    let f = File::open(&path).map_err(|e| VtlError::io(&path, e))?;
                    f.sync_data().map_err(|e| VtlError::io(&path, e))?;
                }
            } else {
                let d = File::open(&self.dir).map_err(|e| VtlError::io(&self.dir, e))?;
                // SAFETY: syncfs on a descriptor we own.
                if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
                    return Err(VtlError::io(&self.dir, std::io::Error::last_os_error()));
                }
            }
        }
        let d = File::open(&self.dir).map_err(|e| VtlError::io(&self.dir, e))?;
        d.sync_all().map_err(|e| VtlError::io(&self.dir, e))
    }

    fn eom_sense(&self, mut s: Sense) -> Sense {
        if self.past_early_warning(self.partition) {
            s.eom = true;
        }
        s
    }

    fn write6(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        key: Option<&crate::crypto::KeyState>,
    ) -> Completion {
        if cdb[1] & 0x01 != 0 {
            return bad_cdb();
        }
        let len = u24_at(cdb, 2) as usize;
        if len == 0 {
            return Completion::good(0);
        }
        if len > MAX_BLOCK {
            return bad_cdb();
        }
        let buf = match data {
            DataDir::Out(b) if b.len() >= len => &b[..len],
            _ => return bad_cdb(),
        };
        if let Some(c) = self.write_refused() {
            return c;
        }
        let (p, blk) = (self.partition, self.block);
        if self.faults.error_at(p, blk, ReadOrWrite::Write) {
            self.ta_events |= ta_bit(0x03) | ta_bit(0x06);
            return fail(SenseKey::MediumError, 0x0c, 0x00);
        }
        if let Err(e) = self.truncate(p, blk) {
            return io_fail("write", &self.dir, &e, SenseKey::MediumError, 0x0c, 0x00);
        }
        if self.parts[p].bytes + len as u64 > self.end_of_medium(p) {
            let mut s = Sense::new(SenseKey::VolumeOverflow, 0x00, 0x02);
            s.eom = true;
            s.information = Some(len as i64);
            return check(s, 0);
        }
        // Encrypted: the sidecar (nonce and KAD) goes in first, hidden like the record by the marker,
        // and the record file holds the ciphertext and the tag. In clear: the record's exact bytes,
        // and no sidecar at its block.
        let sealed = match key {
            Some(k) => match crate::crypto::seal(k, buf) {
                Some(x) => Some(x),
                None => return fail(SenseKey::HardwareError, 0x44, 0x00),
            },
            None => None,
        };
        let side_path = self.rec(p, blk, 'K');
        match &sealed {
            Some((side, _)) => {
                if let Err(e) = write_hidden(&self.dir, &side_path, side) {
                    return io_fail("write", &side_path, &e, SenseKey::MediumError, 0x0c, 0x00);
                }
                self.sidecars = true;
            }
            None if self.sidecars => {
                if let Err(e) = cart::remove_if_exists(&side_path) {
                    return io_fail("write", &side_path, &e, SenseKey::MediumError, 0x0c, 0x00);
                }
            }
            None => {}
        }
        let buf: &[u8] = match &sealed {
            Some((_, ct)) => ct,
            None => buf,
        };
        let stored = buf.len() as u64;
        self.bump_vcr();
        // The record goes into a temporary file, is renamed to `<p>_<blk>_R` (beside the marker at
        // `blk`, which hides it) and becomes part of the tape when the marker moves past it. At every
        // instant the directory is a valid image: the tape before the write or the tape after it.
        let pre =
            if len >= crate::writer::PRECREATE_MIN || self.precreate.continues(&self.dir, p, blk) {
                // A short record in a run takes a pre-created file like any other, and the run goes
                // on: LTFS streams files of all sizes.
                self.precreate.take(&self.dir, p, blk)
            } else {
                // A short record outside a run starts none.
                self.precreate.cancel();
                None
            };
        let (tmp, written) = match pre.map_or_else(|| crate::writer::create_temp(&self.dir), Ok) {
            Ok((tmp, mut f)) => {
                let r = f.write_all(buf);
                (tmp, r)
            }
            Err(e) => return io_fail("write", &self.dir, &e, SenseKey::MediumError, 0x0c, 0x00),
        };
        crate::crash::step();
        let path = self.rec(p, blk, 'R');
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return io_fail("write", &path, &e, SenseKey::MediumError, 0x0c, 0x00);
        }
        crate::crash::step();
        if let Err(e) = self.move_eod(p, blk, blk + 1) {
            // Still hidden by the marker at `blk`: the record was not written.
            let _ = fs::remove_file(&path);
            if sealed.is_some() {
                let _ = fs::remove_file(&side_path);
            }
            return io_fail("write", &path, &e, SenseKey::MediumError, 0x0c, 0x00);
        }
        self.changed = true;
        let part = &mut self.parts[p];
        part.eod = blk + 1;
        part.bytes += stored;
        if sealed.is_some() {
            part.encrypted.insert(blk);
        }
        part.unsynced_from.get_or_insert(blk);
        self.block = blk + 1;
        self.last_write = Some((p as u8, self.block));
        self.meta.bytes_written += len as u64;
        self.meta.last_mount_bytes_written += len as u64;
        self.meta.records_written += 1;
        self.meta_dirty = true;
        if self.past_early_warning(p) {
            let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x02);
            s.eom = true;
            s.information = Some(0);
            return check(s, len);
        }
        Completion::good(len)
    }

    fn read6(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        key: Option<&crate::crypto::KeyState>,
    ) -> Completion {
        if cdb[1] & 0x01 != 0 {
            return bad_cdb();
        }
        let sili = cdb[1] & 0x02 != 0;
        let len = u24_at(cdb, 2) as usize;
        if len == 0 {
            return Completion::good(0);
        }
        if !self.can_read {
            return fail(SenseKey::MediumError, 0x30, 0x00);
        }
        let DataDir::In(buf) = data else {
            return bad_cdb();
        };
        let (p, blk) = (self.partition, self.block);
        if blk >= self.parts[p].eod {
            let mut s = self.eom_sense(Sense::new(SenseKey::BlankCheck, 0x00, 0x05));
            s.information = Some(len as i64);
            return check(s, 0);
        }
        if self.faults.error_at(p, blk, ReadOrWrite::Read) {
            self.ta_events |= ta_bit(0x03) | ta_bit(0x05);
            return fail(SenseKey::MediumError, 0x11, 0x00);
        }
        if self.parts[p].filemarks.contains(&blk) {
            self.block += 1;
            let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x01);
            s.filemark = true;
            s.information = Some(len as i64);
            return check(s, 0);
        }
        let path = self.rec(p, blk, 'R');
        while self
            .ahead
            .front()
            .is_some_and(|(ap, ab, _)| *ap != p || *ab < blk)
        {
            self.ahead.pop_front();
        }
        let opened = match self.ahead.front() {
            Some((ap, ab, _)) if *ap == p && *ab == blk => {
                self.ahead.pop_front().map(|(_, _, f)| f)
            }
            _ => None,
        };
        let mut f = match opened.map_or_else(|| File::open(&path), Ok) {
            Ok(f) => f,
            Err(e) => return io_fail("read", &path, &e, SenseKey::MediumError, 0x11, 0x00),
        };
        self.read_ahead(p, blk);
        let size = if self.parts[p].encrypted.contains(&blk) {
            match self.read_sealed(p, blk, key, &mut f) {
                Ok(plain) => {
                    let n = plain.len().min(len).min(buf.len());
                    buf[..n].copy_from_slice(&plain[..n]);
                    plain.len()
                }
                Err(c) => return c,
            }
        } else {
            let size = match f.metadata() {
                Ok(m) => m.len() as usize,
                Err(e) => return io_fail("read", &path, &e, SenseKey::MediumError, 0x11, 0x00),
            };
            let n = size.min(len).min(buf.len());
            if let Err(e) = f.read_exact(&mut buf[..n]) {
                return io_fail("read", &path, &e, SenseKey::MediumError, 0x11, 0x00);
            }
            if key.is_some_and(|k| k.decrypt == crate::crypto::DECRYPT_DECRYPT) {
                // DECRYPT (not MIXED) refuses records in clear: DATA PROTECT 74/02 UNENCRYPTED
                // DATA ENCOUNTERED WHILE DECRYPTING. The position stays before the record.
                return fail(SenseKey::DataProtect, 0x74, 0x02);
            }
            size
        };
        let n = size.min(len).min(buf.len());
        self.block += 1;
        self.meta.bytes_read += n as u64;
        self.meta.last_mount_bytes_read += n as u64;
        self.meta.records_read += 1;
        self.meta_dirty = true;
        if size == len || (size < len && sili) {
            return Completion::good(n);
        }
        let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x00);
        s.ili = true;
        s.information = Some(len as i64 - size as i64);
        check(s, n)
    }

    /// Reads and decrypts the encrypted record at `p`/`blk`, whose file is `f`. A failure leaves the
    /// position before the record (the drive could not transfer it).
    fn read_sealed(
        &self,
        p: usize,
        blk: u64,
        key: Option<&crate::crypto::KeyState>,
        f: &mut File,
    ) -> Result<Vec<u8>, Completion> {
        let side_path = self.rec(p, blk, 'K');
        let side = fs::read(&side_path)
            .map_err(|e| io_fail("read", &side_path, &e, SenseKey::MediumError, 0x11, 0x00))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data).map_err(|e| {
            io_fail(
                "read",
                &self.rec(p, blk, 'R'),
                &e,
                SenseKey::MediumError,
                0x11,
                0x00,
            )
        })?;
        match crate::crypto::open(key, &side, &mut data) {
            Ok(_) => Ok(data),
            Err(e) => Err(crate::crypto::open_failure(&e)),
        }
    }

    /// What the block at the position is, for Next Block Encryption Status (reads its sidecar).
    fn next_block_sidecar(&self) -> Option<Option<Vec<u8>>> {
        let (p, blk) = (self.partition, self.block);
        if blk >= self.parts[p].eod || self.parts[p].filemarks.contains(&blk) {
            return None;
        }
        if !self.parts[p].encrypted.contains(&blk) {
            return Some(None);
        }
        Some(Some(fs::read(self.rec(p, blk, 'K')).unwrap_or_default()))
    }

    fn write_filemarks(&mut self, cdb: &[u8]) -> Completion {
        if cdb[1] & 0x02 != 0 {
            return bad_cdb(); // setmarks
        }
        let n = u24_at(cdb, 2);
        if n > MAX_FILEMARKS_PER_COMMAND {
            return bad_cdb();
        }
        if n > 0 {
            if let Some(c) = self.write_refused() {
                return c;
            }
            let (p, blk) = (self.partition, self.block);
            if self.faults.error_at(p, blk, ReadOrWrite::Write) {
                self.ta_events |= ta_bit(0x03) | ta_bit(0x06);
                return fail(SenseKey::MediumError, 0x0c, 0x00);
            }
            if let Err(e) = self.truncate(p, blk) {
                return io_fail(
                    "write filemark",
                    &self.dir,
                    &e,
                    SenseKey::MediumError,
                    0x0c,
                    0x00,
                );
            }
            if self.parts[p].bytes >= self.end_of_medium(p) {
                let mut s = Sense::new(SenseKey::VolumeOverflow, 0x00, 0x02);
                s.eom = true;
                s.information = Some(n as i64);
                return check(s, 0);
            }
            self.bump_vcr();
            // The filemarks are made beyond the marker (which hides them) and join the tape together
            // when it moves past them.
            let end = blk + n as u64;
            for at in blk..end {
                let path = self.rec(p, at, 'F');
                if let Err(e) = File::create(&path) {
                    for made in blk..at {
                        let _ = fs::remove_file(self.rec(p, made, 'F'));
                    }
                    return io_fail(
                        "write filemark",
                        &path,
                        &e,
                        SenseKey::MediumError,
                        0x0c,
                        0x00,
                    );
                }
                crate::crash::step();
            }
            if let Err(e) = self.move_eod(p, blk, end) {
                return io_fail(
                    "write filemark",
                    &self.dir,
                    &e,
                    SenseKey::MediumError,
                    0x0c,
                    0x00,
                );
            }
            self.parts[p].filemarks.extend(blk..end);
            self.parts[p].eod = end;
            self.block = end;
            self.changed = true;
            self.last_write = Some((p as u8, self.block));
        }
        self.finish_run();
        if let Err(e) = self.sync() {
            return io_fail("sync", &self.dir, &e, SenseKey::MediumError, 0x0c, 0x00);
        }
        if n > 0 && self.past_early_warning(self.partition) {
            let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x02);
            s.eom = true;
            s.information = Some(0);
            return check(s, 0);
        }
        Completion::good(0)
    }

    fn space(&mut self, code: u8, count: i64) -> Completion {
        let p = self.partition;
        let pos = self.block;
        let eod = self.parts[p].eod;
        match code {
            0 => {
                if count > 0 {
                    let n = count as u64;
                    let target = pos.saturating_add(n);
                    if let Some(&fm) = self.parts[p].filemarks.range(pos..target.min(eod)).next() {
                        self.block = fm + 1;
                        let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x01);
                        s.filemark = true;
                        s.information = Some((n - (fm - pos)) as i64);
                        return check(s, 0);
                    }
                    if target > eod {
                        self.block = eod;
                        let mut s = self.eom_sense(Sense::new(SenseKey::BlankCheck, 0x00, 0x05));
                        s.information = Some((n - (eod - pos)) as i64);
                        return check(s, 0);
                    }
                    self.block = target;
                } else if count < 0 {
                    let n = count.unsigned_abs();
                    let lo = pos.saturating_sub(n);
                    if let Some(&fm) = self.parts[p].filemarks.range(lo..pos).next_back() {
                        self.block = fm;
                        let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x01);
                        s.filemark = true;
                        s.information = Some((n - (pos - fm - 1)) as i64);
                        return check(s, 0);
                    }
                    if n > pos {
                        self.block = 0;
                        let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x04);
                        s.eom = true;
                        s.information = Some((n - pos) as i64);
                        return check(s, 0);
                    }
                    self.block = pos - n;
                }
                Completion::good(0)
            }
            1 => {
                if count > 0 {
                    let n = count as u64;
                    let fms = &self.parts[p].filemarks;
                    let mut found = 0u64;
                    for &fm in fms.range(pos..eod) {
                        found += 1;
                        if found == n {
                            self.block = fm + 1;
                            return Completion::good(0);
                        }
                    }
                    self.block = eod;
                    let mut s = self.eom_sense(Sense::new(SenseKey::BlankCheck, 0x00, 0x05));
                    s.information = Some((n - found) as i64);
                    check(s, 0)
                } else if count < 0 {
                    let n = count.unsigned_abs();
                    let mut found = 0u64;
                    for &fm in self.parts[p].filemarks.range(..pos).rev() {
                        found += 1;
                        if found == n {
                            self.block = fm;
                            return Completion::good(0);
                        }
                    }
                    self.block = 0;
                    let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x04);
                    s.eom = true;
                    s.information = Some((n - found) as i64);
                    check(s, 0)
                } else {
                    Completion::good(0)
                }
            }
            3 => {
                self.block = eod;
                Completion::good(0)
            }
            _ => bad_cdb(),
        }
    }

    /// LOCATE: `dest` 0 = logical object, 1 = logical file (the BOP side of that filemark), 3 = EOD.
    fn locate(&mut self, partition: Option<u8>, dest: u8, id: u64) -> Completion {
        let p = match partition {
            Some(p) if p as usize >= self.parts.len() => return bad_cdb(),
            Some(p) => p as usize,
            None => self.partition,
        };
        self.partition = p;
        let eod = self.parts[p].eod;
        let target = match dest {
            0 => id,
            1 => {
                if id == 0 {
                    0
                } else {
                    match self.parts[p]
                        .filemarks
                        .iter()
                        .nth((id - 1).min(usize::MAX as u64) as usize)
                    {
                        Some(&fm) => fm,
                        None => u64::MAX,
                    }
                }
            }
            3 => eod,
            _ => return bad_cdb(),
        };
        if target > eod {
            self.block = eod;
            return check(
                self.eom_sense(Sense::new(SenseKey::BlankCheck, 0x00, 0x05)),
                0,
            );
        }
        self.block = target;
        Completion::good(0)
    }

    fn read_position(&self, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let sa = cdb[1] & 0x1f;
        let p = self.partition;
        let blk = self.block;
        let mut flags = 0u8;
        if blk == 0 {
            flags |= 0x80;
        }
        if blk == self.parts[p].eod && self.past_early_warning(p) {
            flags |= 0x40;
        }
        match sa {
            0 | 1 => {
                let mut b = vec![0u8; 20];
                b[0] = flags | if blk > u32::MAX as u64 { 0x04 } else { 0 };
                b[1] = p as u8;
                let short = blk.min(u32::MAX as u64) as u32;
                b[4..8].copy_from_slice(&short.to_be_bytes());
                b[8..12].copy_from_slice(&short.to_be_bytes());
                respond(data, &b, 20)
            }
            6 => {
                let mut b = vec![0u8; 32];
                b[0] = flags;
                b[4..8].copy_from_slice(&(p as u32).to_be_bytes());
                b[8..16].copy_from_slice(&blk.to_be_bytes());
                let files = self.parts[p].filemarks.range(..blk).count() as u64;
                b[16..24].copy_from_slice(&files.to_be_bytes());
                respond(data, &b, 32)
            }
            8 => {
                let alloc = u16_at(cdb, 7) as usize;
                let mut b = vec![0u8; 32];
                b[0] = flags;
                b[1] = p as u8;
                b[2..4].copy_from_slice(&0x1cu16.to_be_bytes());
                b[8..16].copy_from_slice(&blk.to_be_bytes());
                b[16..24].copy_from_slice(&blk.to_be_bytes());
                respond(data, &b, if alloc == 0 { 32 } else { alloc })
            }
            _ => bad_cdb(),
        }
    }

    fn erase(&mut self) -> Completion {
        if let Some(c) = self.write_refused() {
            return c;
        }
        let (p, at) = (self.partition, self.block);
        self.finish_run();
        if let Err(e) = self.truncate(p, at).and_then(|_| self.sync()) {
            return io_fail("erase", &self.dir, &e, SenseKey::MediumError, 0x0c, 0x00);
        }
        Completion::good(0)
    }

    /// Erases the whole cartridge and makes `sizes_mb.len()` empty partitions. Each step leaves a valid
    /// image: every partition's marker moves to block 0 first, then what that made unreachable goes.
    fn format(&mut self, sizes_mb: Vec<u64>) -> Result<(), VtlError> {
        self.finish_run();
        for p in 0..self.parts.len() {
            let eod = self.parts[p].eod;
            self.move_eod(p, eod, 0)?;
            self.parts[p].eod = 0;
            self.changed = true;
        }
        // Until the end the model is not the directory's: a failure leaves it to be read again.
        self.stale = true;
        let count = sizes_mb.len();
        let mut markers = Vec::new();
        for e in fs::read_dir(&self.dir)
            .map_err(|e| VtlError::io(&self.dir, e))?
            .flatten()
        {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let remove = match cart::parse_rec_name(name) {
                Some((p, 0, 'E')) => {
                    if p >= count {
                        markers.push(e.path());
                    }
                    false
                }
                Some(_) => true,
                None => name.starts_with("attr_") && name != "attr_0_9",
            };
            if remove {
                cart::remove_if_exists(&e.path())?;
                crate::crash::step();
            }
        }
        // Partitions that no longer exist lose their (now lone) marker last.
        for m in markers {
            cart::remove_if_exists(&m)?;
            crate::crash::step();
        }
        for p in 0..count {
            let e = self.rec(p, 0, 'E');
            if !e.exists() {
                File::create(&e).map_err(|err| VtlError::io(&e, err))?;
                crate::crash::step();
            }
        }
        self.meta.partitions = count as u8;
        self.meta.partition_mb = sizes_mb;
        self.meta_dirty = true;
        cart::save_meta(&self.dir, &self.meta)?;
        self.parts = (0..count)
            .map(|p| Part {
                eod: 0,
                filemarks: BTreeSet::new(),
                encrypted: BTreeSet::new(),
                bytes: 0,
                capacity: self.meta.partition_bytes(p),
                unsynced_from: None,
            })
            .collect();
        self.stale = false;
        self.partition = 0;
        self.block = 0;
        self.changed = true;
        self.bump_vcr();
        self.sync()
    }

    fn remaining_mib(&self, p: usize) -> u64 {
        self.parts
            .get(p)
            .map_or(0, |x| x.capacity.saturating_sub(x.bytes) / MIB)
    }
}

impl VirtualDrive {
    pub(crate) fn new(lib: Library, index: usize, model: DriveModel, serial: String) -> Self {
        let state_file = crate::state::state_path(lib.dir());
        let crypto = crate::crypto::slot(lib.dir(), index);
        Self {
            crypto,
            lib,
            index,
            model,
            serial,
            media: None,
            media_broken: false,
            fast: None,
            fast_view: Vec::new(),
            state_file,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn model(&self) -> DriveModel {
        self.model
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    fn fast_ok(&self) -> bool {
        self.fast.is_some()
            && self
                .media
                .as_ref()
                .is_some_and(|m| m.threaded && !m.meta.cleaning && !m.stale)
            && crate::state::state_id(&self.state_file) == self.fast
    }

    /// Lets go of a cartridge model: unused pre-created files go. The directory itself is always a
    /// valid image, so nothing else is left to do. Statistics not yet saved are saved only when
    /// `current` (the model is still the loaded cartridge's: otherwise another handle may have saved a
    /// newer meta, partitions included, that this one must not overwrite).
    fn release(mut m: Media, current: bool) {
        m.finish_run();
        if current
            && m.meta_dirty
            && let Err(e) = cart::save_meta(&m.dir, &m.meta)
        {
            tracing::warn!(cartridge = %m.barcode, "cartridge statistics not saved: {e}");
        }
    }

    /// Brings the in-memory model in line with `library.json`. A new load (a move into the drive, or
    /// LOAD after UNLOAD) or a change by another handle means reading the cartridge directory again.
    fn sync_media(&mut self, st: &mut State) {
        let Some(barcode) = st.drives[self.index]
            .loaded
            .as_ref()
            .map(|l| l.barcode.clone())
        else {
            self.media_broken = false;
            if let Some(m) = self.media.take() {
                Self::release(m, false);
            }
            return;
        };
        let faults = MediaFaults::for_cartridge(st, &barcode);
        let Some(l) = st.drives[self.index].loaded.as_mut() else {
            return;
        };
        if let Some(m) = self.media.as_mut()
            && m.load_seq == l.load_seq
            && m.version == l.version
            && m.barcode == l.barcode
            && !m.stale
        {
            if (l.partition, l.block) != m.persisted_pos {
                // Another handle moved the tape (or this model could not follow it past its end of
                // data: it keeps that, without claiming to have moved).
                m.partition = (l.partition as usize).min(m.parts.len() - 1);
                m.block = l.block.min(m.parts[m.partition].eod);
                m.persisted_pos = (m.partition as u8, m.block);
            }
            m.threaded = l.threaded;
            m.vcr_bumped = l.vcr_bumped;
            m.faults = faults;
            return;
        }
        if let Some(old) = self.media.take() {
            if old.stale && old.load_seq == l.load_seq {
                // The directory changed behind this handle: other handles' models are stale too.
                l.version += 1;
            }
            Self::release(old, false);
        }
        let l = l.clone();
        let dir = self.lib.cartridge_dir(&l.barcode);
        match Media::open(dir, &l, faults, self.model) {
            Ok(m) => {
                self.media = Some(m);
                self.media_broken = false;
            }
            Err(e) => {
                tracing::error!(drive = self.index, cartridge = %l.barcode, "cannot open the loaded cartridge: {e}");
                self.media_broken = true;
            }
        }
    }

    /// Writes the drive's position and counters back into the state.
    fn persist(&mut self, st: &mut State) {
        let ds = &mut st.drives[self.index];
        let Some(m) = self.media.as_mut() else { return };
        ds.tapealert |= std::mem::take(&mut m.ta_events);
        let Some(l) = ds.loaded.as_mut().filter(|l| l.load_seq == m.load_seq) else {
            return;
        };
        // Only a handle that moved the tape says where it is: one that merely looked (a probe
        // whose scan met another handle's write run half-way) must not move it back.
        if (m.partition as u8, m.block) != m.persisted_pos {
            l.partition = m.partition as u8;
            l.block = m.block;
        }
        l.threaded = m.threaded;
        l.vcr_bumped = m.vcr_bumped;
        l.last_write = m.last_write;
        if m.changed || m.stale {
            // Other handles read the directory again (a stale model means it changed behind us).
            l.version += 1;
            m.version = l.version;
            m.changed = false;
        }
        m.persisted_pos = (m.partition as u8, m.block);
        if m.meta_dirty {
            match cart::save_meta(&m.dir, &m.meta) {
                Ok(()) => m.meta_dirty = false,
                Err(e) => {
                    tracing::warn!(cartridge = %m.barcode, "cartridge statistics not saved: {e}")
                }
            }
        }
    }

    fn slow(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let op = cdb[0];
        let now = util::now_secs();
        st.settle_faults(now);
        self.sync_media(st);
        if let Some(m) = self.media.as_mut() {
            // TapeAlert events from the streaming path.
            st.drives[self.index].tapealert |= std::mem::take(&mut m.ta_events);
            if op != 0x0a {
                m.finish_run();
            }
        }
        self.forget_key_of_unloaded();
        let c = self.dispatch(st, cdb, data, now);
        self.forget_key_of_unloaded();
        self.persist(st);
        c
    }

    fn dispatch(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>, now: u64) -> Completion {
        let op = cdb[0];
        let i = self.index;
        if !matches!(op, 0x12 | 0x03 | 0xa0)
            && let Some([asc, ascq]) = st.drives[i].pending_ua.pop_front()
        {
            return fail(SenseKey::UnitAttention, asc, ascq);
        }
        let needs_medium = matches!(
            op,
            0x00 | 0x01
                | 0x04
                | 0x08
                | 0x0a
                | 0x10
                | 0x11
                | 0x19
                | 0x1b
                | 0x2b
                | 0x34
                | 0x8c
                | 0x8d
                | 0x91
                | 0x92
        );
        if needs_medium {
            if st.becoming_ready(i, now) {
                return fail(SenseKey::NotReady, 0x04, 0x01);
            }
            if self.media_broken {
                return fail(SenseKey::MediumError, 0x31, 0x00);
            }
            let Some(m) = self.media.as_ref() else {
                return fail(SenseKey::NotReady, 0x3a, 0x00);
            };
            if op != 0x1b {
                if !m.threaded {
                    return fail(SenseKey::NotReady, 0x3a, 0x00);
                }
                if m.meta.cleaning && op != 0x8c {
                    return fail(SenseKey::NotReady, 0x30, 0x03);
                }
            }
        }
        match op {
            0x00 => Completion::good(0),
            0x01 => {
                let m = self.media.as_mut().expect("checked");
                m.block = 0;
                Completion::good(0)
            }
            0x03 => self.request_sense(st, cdb, data, now),
            0x04 => self.format(st, cdb),
            0x05 => {
                if cdb[1] & 0x01 != 0 {
                    return bad_cdb();
                }
                let mut b = [0u8; 6];
                b[1..4].copy_from_slice(&(MAX_BLOCK as u32).to_be_bytes()[1..]);
                b[5] = 1;
                respond(data, &b, 6)
            }
            0x08 => {
                let k = lock_crypto(&self.crypto);
                self.media
                    .as_mut()
                    .expect("checked")
                    .read6(cdb, data, k.state.as_ref())
            }
            0x0a => {
                let k = lock_crypto(&self.crypto);
                self.media
                    .as_mut()
                    .expect("checked")
                    .write6(cdb, data, k.encrypting())
            }
            0x10 => self.media.as_mut().expect("checked").write_filemarks(cdb),
            0x11 => {
                let raw = u24_at(cdb, 2);
                let count = ((raw << 8) as i32 >> 8) as i64;
                self.media
                    .as_mut()
                    .expect("checked")
                    .space(cdb[1] & 0x0f, count)
            }
            0x91 => {
                let count = u64_at(cdb, 4) as i64;
                self.media
                    .as_mut()
                    .expect("checked")
                    .space(cdb[1] & 0x0f, count)
            }
            0x12 => {
                let inq = Inquiry {
                    device_type: DeviceType::Tape,
                    removable: true,
                    vendor: "IBM".into(),
                    product: self.model.product().into(),
                    revision: self.model.revision().into(),
                };
                util::inquiry(cdb, data, &inq, 0x01, &self.serial)
            }
            0x15 | 0x55 => self.mode_select(st, cdb, data),
            0x16 | 0x17 => Completion::good(0),
            0x19 => self.media.as_mut().expect("checked").erase(),
            0x1a | 0x5a => self.mode_sense(st, cdb, data),
            0x1b => self.load_unload(st, cdb),
            0x1e => {
                st.drives[i].prevent = cdb[4] & 0x01 != 0;
                Completion::good(0)
            }
            0x2b => {
                let cp = cdb[1] & 0x02 != 0;
                let m = self.media.as_mut().expect("checked");
                m.locate(cp.then_some(cdb[8]), 0, u32_at(cdb, 3) as u64)
            }
            0x92 => {
                let cp = cdb[1] & 0x02 != 0;
                let dest = (cdb[1] >> 3) & 0x07;
                let m = self.media.as_mut().expect("checked");
                m.locate(cp.then_some(cdb[3]), dest, u64_at(cdb, 4))
            }
            0x34 => self
                .media
                .as_ref()
                .expect("checked")
                .read_position(cdb, data),
            0x44 => {
                if cdb[1] & 0x02 != 0 {
                    return bad_cdb();
                }
                let alloc = u16_at(cdb, 7) as usize;
                let medium = if cdb[1] & 0x01 != 0 {
                    match &self.media {
                        Some(m) => Some(m.meta.generation),
                        None => return fail(SenseKey::NotReady, 0x3a, 0x00),
                    }
                } else {
                    None
                };
                respond(data, &crate::density::report(self.model, medium), alloc)
            }
            0x4d => self.log_sense(st, cdb, data, now),
            0x8c => self.read_attribute(cdb, data),
            0x8d => self.write_attribute(cdb, data),
            0xa0 => util::report_luns(cdb, data),
            0xa2 => self.security_in(cdb, data),
            0xb5 => {
                // A key is set for a loaded cartridge and forgotten at its unload; clearing is
                // always possible.
                let loaded = self.media.as_ref().is_some_and(|m| m.threaded);
                let mut k = lock_crypto(&self.crypto);
                let c = crate::crypto::security_out(&mut k, cdb, data, loaded);
                k.load = self.media.as_ref().map(|m| m.load_seq);
                c
            }
            _ => bad_opcode(),
        }
    }

    /// The key goes with the cartridge it was set for: unloaded, moved out, or another one loaded.
    fn forget_key_of_unloaded(&mut self) {
        let current = self
            .media
            .as_ref()
            .filter(|m| m.threaded)
            .map(|m| m.load_seq);
        lock_crypto(&self.crypto).follow_load(current);
    }

    fn security_in(&self, cdb: &[u8], data: DataDir<'_>) -> Completion {
        use crate::crypto::NextBlock;
        let k = lock_crypto(&self.crypto);
        let m = self.media.as_ref().filter(|m| m.threaded);
        let side = m.map(|m| m.next_block_sidecar());
        let block = m.map_or(0, |m| m.block);
        let next = match &side {
            None => NextBlock::Unknown,
            Some(None) => NextBlock::NotABlock,
            Some(Some(None)) => NextBlock::Plain,
            Some(Some(Some(s))) => NextBlock::Encrypted {
                sidecar: s,
                opens: crate::crypto::kad_matches(k.state.as_ref(), s),
            },
        };
        if u16_at(cdb, 2) == 0x0021 && cdb[1] == crate::crypto::PROTOCOL_TAPE && m.is_none() {
            return fail(SenseKey::NotReady, 0x3a, 0x00);
        }
        crate::crypto::security_in(&k, cdb, data, next, block)
    }

    fn request_sense(
        &mut self,
        st: &mut State,
        cdb: &[u8],
        data: DataDir<'_>,
        now: u64,
    ) -> Completion {
        if cdb[1] & 0x01 != 0 {
            return bad_cdb();
        }
        let alloc = cdb[4] as usize;
        let i = self.index;
        let s = if let Some([asc, ascq]) = st.drives[i].pending_ua.pop_front() {
            Sense::new(SenseKey::UnitAttention, asc, ascq)
        } else if st.becoming_ready(i, now) {
            Sense::new(SenseKey::NotReady, 0x04, 0x01)
        } else if self.media.as_ref().is_none_or(|m| !m.threaded) {
            Sense::new(SenseKey::NotReady, 0x3a, 0x00)
        } else {
            Sense::new(SenseKey::NoSense, 0x00, 0x00)
        };
        respond(data, &s.encode_fixed(), alloc)
    }

    fn load_unload(&mut self, st: &mut State, cdb: &[u8]) -> Completion {
        let load = cdb[4] & 0x01 != 0;
        let i = self.index;
        let Some(m) = self.media.as_mut() else {
            return fail(SenseKey::NotReady, 0x3a, 0x00);
        };
        if load {
            if m.threaded {
                m.partition = 0;
                m.block = 0;
                return Completion::good(0);
            }
            // A new load. While the tape was not threaded anyone may have written the cartridge
            // directory (the reference's ltfsck appending an index, a person): this handle and every
            // other one read it again, and the end of data is where its marker now is.
            let Some(old) = self.media.take() else {
                return fail(SenseKey::NotReady, 0x3a, 0x00);
            };
            let dir = old.dir.clone();
            Self::release(old, true);
            st.load_counter += 1;
            let seq = st.load_counter;
            let Some(l) = st.drives[i].loaded.as_mut() else {
                return fail(SenseKey::NotReady, 0x3a, 0x00);
            };
            l.load_seq = seq;
            l.version = 0;
            l.threaded = true;
            l.vcr_bumped = false;
            l.partition = 0;
            l.block = 0;
            l.last_write = None;
            if let Err(e) = crate::changer::loaded_into_drive(st, i, &dir) {
                tracing::warn!(cartridge = %dir.display(), "load bookkeeping failed: {e}");
            }
            self.sync_media(st);
            if self.media_broken {
                return fail(SenseKey::MediumError, 0x31, 0x00);
            }
        } else {
            if st.drives[i].prevent {
                return illegal(0x53, 0x02);
            }
            m.finish_run();
            if let Err(e) = m.sync() {
                tracing::error!(cartridge = %m.barcode, "flush on unload failed: {e}");
            }
            m.threaded = false;
            m.partition = 0;
            m.block = 0;
        }
        Completion::good(0)
    }

    fn format(&mut self, st: &State, cdb: &[u8]) -> Completion {
        let fmt = cdb[2] & 0x0f;
        if fmt > 2 || u16_at(cdb, 3) != 0 {
            return bad_cdb();
        }
        let max_add = self.model.max_additional_partitions();
        let req = st.drives[self.index].partition_request.clone();
        let m = self.media.as_mut().expect("checked");
        if let Some(c) = m.write_refused() {
            return c;
        }
        if m.partition != 0 || m.block != 0 {
            return illegal(0x3b, 0x0c); // position past beginning of medium
        }
        let cap = m.meta.capacity_mb;
        let sizes = match fmt {
            0 => vec![cap],
            _ => match partition_sizes(req.as_ref(), cap, max_add) {
                Some(s) => s,
                None => return bad_cdb(),
            },
        };
        match m.format(sizes) {
            Ok(()) => Completion::good(0),
            Err(e) => io_fail("format", &m.dir, &e, SenseKey::MediumError, 0x0c, 0x00),
        }
    }

    fn mode_sense(&self, st: &State, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let dbd = cdb[1] & 0x08 != 0;
        let ModeSenseCdb {
            ten,
            changeable,
            page,
            alloc,
        } = match parse_mode_sense(cdb) {
            Ok(m) => m,
            Err(c) => return c,
        };
        let mut pages = Vec::new();
        match page {
            0x0f | 0x10 | 0x11 | 0x1d => pages.extend(self.mode_page(st, page, changeable)),
            0x3f => {
                for p in [0x0f, 0x10, 0x11, 0x1d] {
                    pages.extend(self.mode_page(st, p, changeable));
                }
            }
            _ => return bad_cdb(),
        }
        let m = self.media.as_ref().filter(|m| m.threaded);
        let wp = m.is_some_and(|m| m.write_protected() || !m.can_write);
        let dev_specific = if changeable {
            0
        } else {
            0x10 | if wp { 0x80 } else { 0 }
        };
        let density = m.map_or(0, |m| m.meta.generation.density_code());
        let bd: Vec<u8> = if dbd {
            Vec::new()
        } else {
            vec![if changeable { 0 } else { density }, 0, 0, 0, 0, 0, 0, 0]
        };
        let mut resp = if ten {
            let mut h = vec![0u8; 8];
            h[3] = dev_specific;
            h[6..8].copy_from_slice(&(bd.len() as u16).to_be_bytes());
            h
        } else {
            vec![0, 0, dev_specific, bd.len() as u8]
        };
        resp.extend_from_slice(&bd);
        resp.extend_from_slice(&pages);
        if ten {
            let len = (resp.len() - 2) as u16;
            resp[0..2].copy_from_slice(&len.to_be_bytes());
        } else {
            resp[0] = (resp.len() - 1).min(255) as u8;
        }
        respond(data, &resp, alloc)
    }

    fn mode_page(&self, st: &State, page: u8, changeable: bool) -> Vec<u8> {
        let m = self.media.as_ref().filter(|m| m.threaded);
        match page {
            0x0f => {
                let mut p = vec![0u8; 16];
                p[0] = 0x0f;
                p[1] = 0x0e;
                if changeable {
                    p[2] = 0x80;
                    return p;
                }
                p[2] = 0x40
                    | if st.drives[self.index].compression() {
                        0x80
                    } else {
                        0
                    };
                p[3] = 0x80;
                p[7] = 0x01;
                p[11] = 0x01;
                p
            }
            0x10 => {
                let mut p = vec![0u8; 16];
                p[0] = 0x10;
                p[1] = 0x0e;
                if !changeable {
                    p[3] = m.map_or(0, |m| m.partition as u8);
                    p[10] = 0x18;
                    p[14] = 0x01;
                }
                p
            }
            0x11 => {
                let max_add = self.model.max_additional_partitions();
                let n = max_add as usize + 1;
                let mut p = vec![0u8; 8 + 2 * n];
                p[0] = 0x11;
                p[1] = (6 + 2 * n) as u8;
                if changeable {
                    p[3] = 0xff;
                    p[4] = 0xf8;
                    p[6] = 0x0f;
                    p[8..].fill(0xff);
                    return p;
                }
                p[2] = max_add;
                p[4] = 0x1c; // PSUM = 11b (units), POFM
                p[5] = 0x03;
                let sizes: Vec<u64> = m.map_or(Vec::new(), |m| {
                    m.meta.partition_mb.iter().map(|mb| mb * MIB).collect()
                });
                p[3] = sizes.len().saturating_sub(1) as u8;
                let mut units = 6u8;
                let unit = |u: u8| 10u64.pow(u as u32);
                while sizes.iter().any(|s| s.div_ceil(unit(units)) > 0xfffe) && units < 18 {
                    units += 1;
                }
                p[6] = units;
                for (k, s) in sizes.iter().take(n).enumerate() {
                    let v = s.div_ceil(unit(units)).min(0xfffe) as u16;
                    p[8 + 2 * k..10 + 2 * k].copy_from_slice(&v.to_be_bytes());
                }
                p
            }
            0x1d => {
                let mut p = vec![0u8; 32];
                p[0] = 0x1d;
                p[1] = 0x1e;
                p
            }
            _ => Vec::new(),
        }
    }

    fn mode_select(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let ten = cdb[0] == 0x55;
        if cdb[1] & 0x01 != 0 {
            return bad_cdb(); // SP: saving pages is not supported
        }
        let len = if ten {
            u16_at(cdb, 7) as usize
        } else {
            cdb[4] as usize
        };
        if len == 0 {
            return Completion::good(0);
        }
        let b = match data {
            DataDir::Out(b) if b.len() >= len => &b[..len],
            _ => return bad_cdb(),
        };
        let hlen = if ten { 8 } else { 4 };
        if b.len() < hlen {
            return illegal(0x1a, 0x00);
        }
        let bdlen = if ten {
            u16_at(b, 6) as usize
        } else {
            b[3] as usize
        };
        let mut at = hlen;
        if bdlen % 8 != 0 || at + bdlen > b.len() {
            return illegal(0x1a, 0x00);
        }
        for d in b[at..at + bdlen].chunks_exact(8) {
            if u24_at(d, 5) != 0 {
                return bad_param(); // fixed block length: only variable-length records are supported
            }
        }
        at += bdlen;
        let mut compression = None;
        let mut partition = None;
        while at < b.len() {
            let code = b[at] & 0x3f;
            let spf = b[at] & 0x40 != 0;
            let (body_at, plen) = if spf {
                if at + 4 > b.len() {
                    return illegal(0x1a, 0x00);
                }
                (at + 4, u16_at(b, at + 2) as usize)
            } else {
                if at + 2 > b.len() {
                    return illegal(0x1a, 0x00);
                }
                (at + 2, b[at + 1] as usize)
            };
            if body_at + plen > b.len() {
                return illegal(0x1a, 0x00);
            }
            let page = &b[at..body_at + plen];
            if !spf {
                match code {
                    0x0f if plen >= 1 => compression = Some(page[2] & 0x80 != 0),
                    0x11 => {
                        if plen < 6 {
                            return bad_param();
                        }
                        let add = page[3];
                        let flags = page[4];
                        let (fdp, sdp, idp) =
                            (flags & 0x80 != 0, flags & 0x40 != 0, flags & 0x20 != 0);
                        if add > self.model.max_additional_partitions()
                            || (fdp as u8 + sdp as u8 + idp as u8) > 1
                        {
                            return bad_param();
                        }
                        let sizes = page[8.min(page.len())..]
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        partition = Some(PartitionRequest {
                            additional: add,
                            fdp,
                            sdp,
                            idp,
                            psum: (flags >> 3) & 0x03,
                            units: page[6] & 0x0f,
                            sizes,
                        });
                    }
                    _ => {}
                }
            }
            at = body_at + plen;
        }
        let ds = &mut st.drives[self.index];
        if let Some(c) = compression {
            ds.compression = Some(c);
        }
        if let Some(p) = partition {
            ds.partition_request = Some(p);
        }
        Completion::good(0)
    }

    fn log_sense(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>, now: u64) -> Completion {
        let page = cdb[2] & 0x3f;
        let subpage = cdb[3];
        let pointer = u16_at(cdb, 5);
        let alloc = u16_at(cdb, 7) as usize;
        if subpage != 0 {
            return bad_cdb();
        }
        let i = self.index;
        let mut params: Vec<(u16, u8, Vec<u8>)> = Vec::new();
        match page {
            0x00 => {
                let b = [0x00u8, 0x12, 0x17, 0x2e, 0x31];
                let mut resp = vec![0x00, 0x00, 0x00, b.len() as u8];
                resp.extend_from_slice(&b);
                return respond(data, &resp, alloc);
            }
            0x2e => {
                let flags = st.tapealert(i, now);
                for f in 1..=64u8 {
                    params.push((f as u16, 0x03, vec![u8::from(flags & ta_bit(f) != 0)]));
                }
                st.drives[i].tapealert = 0;
            }
            0x12 => {
                let flags = st.tapealert(i, now);
                params.push((0x0000, 0x03, flags.reverse_bits().to_be_bytes().to_vec()));
            }
            0x17 | 0x31 => {
                let Some(m) = self.media.as_ref().filter(|m| m.threaded) else {
                    return fail(SenseKey::NotReady, 0x3a, 0x00);
                };
                if page == 0x31 {
                    let cap = |p: usize| m.parts.get(p).map_or(0, |x| x.capacity / MIB) as u32;
                    let rem = |p: usize| m.remaining_mib(p) as u32;
                    for (code, v) in [(1u16, rem(0)), (2, rem(1)), (3, cap(0)), (4, cap(1))] {
                        params.push((code, 0x03, v.to_be_bytes().to_vec()));
                    }
                } else {
                    let mt = &m.meta;
                    let mb = |b: u64| b / 1_000_000;
                    let used: u64 = m.parts.iter().map(|p| p.bytes).sum();
                    params.push((0x0000, 0x03, vec![1]));
                    params.push((0x0001, 0x03, (mt.mounts as u32).to_be_bytes().to_vec()));
                    params.push((0x0002, 0x03, mt.records_written.to_be_bytes().to_vec()));
                    params.push((0x0003, 0x03, 0u32.to_be_bytes().to_vec()));
                    params.push((0x0004, 0x03, 0u32.to_be_bytes().to_vec()));
                    params.push((0x0007, 0x03, mt.records_read.to_be_bytes().to_vec()));
                    params.push((0x0008, 0x03, 0u32.to_be_bytes().to_vec()));
                    params.push((0x0009, 0x03, 0u32.to_be_bytes().to_vec()));
                    params.push((
                        0x000e,
                        0x03,
                        (mb(mt.last_mount_bytes_written) as u32)
                            .to_be_bytes()
                            .to_vec(),
                    ));
                    params.push((
                        0x000f,
                        0x03,
                        (mb(mt.last_mount_bytes_read) as u32).to_be_bytes().to_vec(),
                    ));
                    params.push((0x0010, 0x03, mb(mt.bytes_written).to_be_bytes().to_vec()));
                    params.push((0x0011, 0x03, mb(mt.bytes_read).to_be_bytes().to_vec()));
                    params.push((
                        0x0016,
                        0x03,
                        (mb(mt.capacity_mb * MIB) as u32).to_be_bytes().to_vec(),
                    ));
                    params.push((0x0017, 0x03, (mb(used) as u32).to_be_bytes().to_vec()));
                    params.push((0x0040, 0x01, util::padded(&mt.barcode, 32)));
                    params.push((0x0080, 0x03, vec![u8::from(m.write_protected())]));
                    params.push((0x0081, 0x03, vec![0]));
                }
            }
            _ => return bad_cdb(),
        }
        let mut resp = vec![page, 0, 0, 0];
        for (code, control, value) in params.into_iter().filter(|(c, _, _)| *c >= pointer) {
            resp.extend_from_slice(&code.to_be_bytes());
            resp.push(control);
            resp.push(value.len() as u8);
            resp.extend_from_slice(&value);
        }
        let len = (resp.len() - 4) as u16;
        resp[2..4].copy_from_slice(&len.to_be_bytes());
        respond(data, &resp, alloc)
    }

    /// Attributes of partition `p`: synthesised device/medium attributes plus stored host attributes,
    /// encoded (header + value), ascending by identifier.
    fn attributes(&self, m: &Media, p: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut dev = |id: u16, format: u8, value: Vec<u8>| {
            let mut b = id.to_be_bytes().to_vec();
            b.push(0x80 | format);
            b.extend_from_slice(&(value.len() as u16).to_be_bytes());
            b.extend_from_slice(&value);
            out.push((id, b));
        };
        let mt = &m.meta;
        dev(0x0000, 0, m.remaining_mib(p).to_be_bytes().to_vec());
        dev(
            0x0001,
            0,
            (m.parts[p].capacity / MIB).to_be_bytes().to_vec(),
        );
        dev(0x0003, 0, mt.mounts.to_be_bytes().to_vec());
        dev(
            0x0009,
            0,
            cart::read_vcr(&m.dir).unwrap_or(1).to_be_bytes().to_vec(),
        );
        dev(0x0220, 0, (mt.bytes_written / MIB).to_be_bytes().to_vec());
        dev(0x0221, 0, (mt.bytes_read / MIB).to_be_bytes().to_vec());
        dev(0x0400, 1, util::padded("VIRTUAL", 8));
        dev(0x0401, 1, util::padded(&format!("RV{}", mt.barcode), 32));
        dev(
            0x0405,
            0,
            vec![if mt.cleaning {
                0
            } else {
                mt.generation.density_code()
            }],
        );
        let (y, mo, d) = util::civil_from_days((mt.created / 86_400) as i64);
        dev(0x0406, 1, format!("{y:04}{mo:02}{d:02}").into_bytes());
        dev(0x0408, 0, vec![if mt.cleaning { 0x01 } else { 0x00 }]);
        for (id, raw) in cart::list_attrs(&m.dir, p) {
            let mut b = raw;
            b[0..2].copy_from_slice(&id.to_be_bytes());
            b[2] &= 0x7f;
            let vlen = (b.len() - 5).min(u16::MAX as usize);
            b[3..5].copy_from_slice(&(vlen as u16).to_be_bytes());
            b.truncate(5 + vlen);
            out.push((id, b));
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    fn read_attribute(&self, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let sa = cdb[1] & 0x1f;
        let volume = cdb[5];
        let p = cdb[7] as usize;
        let first = u16_at(cdb, 8);
        let alloc = u32_at(cdb, 10) as usize;
        let m = self.media.as_ref().expect("checked");
        if volume != 0 {
            return bad_cdb();
        }
        match sa {
            0x00 | 0x01 => {
                if p >= m.parts.len() {
                    return bad_cdb();
                }
                let attrs = self.attributes(m, p);
                let mut body = Vec::new();
                if sa == 0x00 {
                    let chosen: Vec<&(u16, Vec<u8>)> =
                        attrs.iter().filter(|(id, _)| *id >= first).collect();
                    if chosen.is_empty() {
                        return bad_cdb();
                    }
                    for (_, b) in chosen {
                        body.extend_from_slice(b);
                    }
                } else {
                    for (id, _) in &attrs {
                        body.extend_from_slice(&id.to_be_bytes());
                    }
                }
                let mut resp = (body.len() as u32).to_be_bytes().to_vec();
                resp.extend_from_slice(&body);
                respond(data, &resp, alloc)
            }
            0x02 => respond(data, &[0, 2, 0, 1], alloc),
            0x03 => respond(data, &[0, 2, 0, m.parts.len() as u8], alloc),
            _ => bad_cdb(),
        }
    }

    fn write_attribute(&mut self, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let volume = cdb[5];
        let p = cdb[7] as usize;
        let len = u32_at(cdb, 10) as usize;
        let m = self.media.as_mut().expect("checked");
        if volume != 0 || p >= m.parts.len() {
            return bad_cdb();
        }
        if let Some(c) = m.write_refused() {
            return c;
        }
        if len == 0 {
            return Completion::good(0);
        }
        let b = match data {
            DataDir::Out(b) if b.len() >= len => &b[..len],
            _ => return bad_cdb(),
        };
        if b.len() < 4 {
            return illegal(0x1a, 0x00);
        }
        let end = (4 + u32_at(b, 0) as usize).min(b.len());
        let mut at = 4;
        let mut attrs = Vec::new();
        while at < end {
            if at + 5 > end {
                return illegal(0x1a, 0x00);
            }
            let id = u16_at(b, at);
            let vlen = u16_at(b, at + 3) as usize;
            if at + 5 + vlen > end {
                return illegal(0x1a, 0x00);
            }
            // Device and medium attributes (and their vendor-specific ranges) are read-only.
            if id < 0x0800 || (0x0c00..0x1400).contains(&id) {
                return bad_param();
            }
            attrs.push((id, b[at + 2] & 0x7f, &b[at + 5..at + 5 + vlen]));
            at += 5 + vlen;
        }
        for (id, format, value) in attrs {
            let path = cart::attr_path(&m.dir, p, id);
            let r = if value.is_empty() {
                cart::remove_if_exists(&path)
            } else {
                let mut raw = id.to_be_bytes().to_vec();
                raw.push(format);
                raw.extend_from_slice(&(value.len() as u16).to_be_bytes());
                raw.extend_from_slice(value);
                cart::write_atomic(&path, &raw)
            };
            if let Err(e) = r {
                return io_fail(
                    "write attribute",
                    &path,
                    &e,
                    SenseKey::MediumError,
                    0x0c,
                    0x00,
                );
            }
        }
        Completion::good(0)
    }
}

/// Partition sizes in MiB for FORMAT MEDIUM from the MODE SELECT page 0x11 request. `None` when the
/// request cannot be met.
fn partition_sizes(req: Option<&PartitionRequest>, cap: u64, max_add: u8) -> Option<Vec<u64>> {
    let Some(r) = req else { return Some(vec![cap]) };
    if r.additional > max_add {
        return None;
    }
    let n = r.additional as usize + 1;
    if n == 1 {
        return Some(vec![cap]);
    }
    if (n as u64) > cap {
        return None;
    }
    // Default split, as the reference file backend does for two partitions: 5% each, the rest last.
    let default = || {
        let small = (cap * 5 / 100).max(1);
        let mut v = vec![small; n - 1];
        let used = small * (n as u64 - 1);
        if used >= cap {
            v = vec![1; n - 1];
        }
        let rest = cap - v.iter().sum::<u64>();
        v.push(rest);
        v
    };
    if r.sdp {
        let each = cap / n as u64;
        let mut v = vec![each; n];
        v[n - 1] = cap - each * (n as u64 - 1);
        return Some(v);
    }
    if !r.idp {
        return Some(default());
    }
    let unit: u64 = match r.psum {
        0 => 1,
        1 => 1_000,
        2 => 1_000_000,
        _ => 10u64.checked_pow(r.units as u32).unwrap_or(u64::MAX),
    };
    let sizes: Vec<u16> = (0..n)
        .map(|k| r.sizes.get(k).copied().unwrap_or(0))
        .collect();
    if sizes.iter().all(|&s| s == 0) {
        return Some(default());
    }
    let mut rest_at = sizes.iter().position(|&s| s == 0xffff);
    if rest_at.is_none() && sizes[n - 1] == 0 {
        rest_at = Some(n - 1);
    }
    let mut out = Vec::with_capacity(n);
    for (k, &s) in sizes.iter().enumerate() {
        if Some(k) == rest_at {
            out.push(0);
            continue;
        }
        let bytes = (s as u64).saturating_mul(unit);
        let mut mib = bytes.div_ceil(MIB).max(1);
        // A virtual cartridge is much smaller than a real one: a size that would take more than half
        // of it (LTFS asks for "1 GB, rounded up to the minimum") becomes the 5% default.
        if mib > cap / 2 {
            mib = (cap * 5 / 100).max(1);
        }
        out.push(mib);
    }
    let explicit: u64 = out.iter().sum();
    match rest_at {
        Some(k) => {
            if explicit >= cap {
                return Some(default());
            }
            out[k] = cap - explicit;
        }
        None => {
            if explicit > cap {
                return Some(default());
            }
        }
    }
    Some(out)
}

impl Transport for VirtualDrive {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        _timeout: Duration,
    ) -> Result<Completion, TransportError> {
        let Some(&op) = cdb.first() else {
            return Ok(bad_opcode());
        };
        if cdb.len() < util::cdb_len(op) {
            return Ok(bad_cdb());
        }
        // Another drive's transaction changed `library.json`: if this drive's part is as this handle
        // left it, streaming goes on without a transaction of its own (two drives writing at once
        // would otherwise make each other's every record a transaction).
        if matches!(op, 0x08 | 0x0a | 0x34 | 0x2b | 0x92)
            && self.fast.is_some()
            && !self.fast_ok()
            && let Ok((view, id)) = crate::state::read_view(self.lib.dir(), self.index)
            && view == self.fast_view
            && id.is_some()
        {
            self.fast = id;
        }
        // READ POSITION between streamed records (LTFS asks where each file starts) is answered from
        // the in-memory model: it changes nothing, so neither the write run nor the fast path ends
        // (ending the run per file, i.e. writing the EOD marker and dropping the pre-created record
        // files, tripled the system time of an LTFS put of many small files).
        if op == 0x34 && self.fast_ok() {
            let m = self.media.as_ref().expect("fast_ok checked");
            return Ok(m.read_position(cdb, data));
        }
        // LOCATE to where the tape already is (LTFS reading files in tape order seeks to each file's
        // first record, which is usually the next one): nothing moves, so it is answered without a
        // state transaction and the read-ahead stays. It ends a write run like any LOCATE.
        if matches!(op, 0x2b | 0x92) && self.fast_ok() {
            let m = self.media.as_mut().expect("fast_ok checked");
            let (cp, part, dest, id) = if op == 0x92 {
                (
                    cdb[1] & 0x02 != 0,
                    cdb[3],
                    (cdb[1] >> 3) & 0x07,
                    u64_at(cdb, 4),
                )
            } else {
                (cdb[1] & 0x02 != 0, cdb[8], 0, u32_at(cdb, 3) as u64)
            };
            if dest == 0 && (!cp || part as usize == m.partition) && id == m.block {
                m.finish_run();
                return Ok(Completion::good(0));
            }
        }
        if op != 0x08
            && let Some(m) = self.media.as_mut()
        {
            m.forget_read_ahead();
        }
        if matches!(op, 0x08 | 0x0a) && self.fast_ok() {
            let m = self.media.as_mut().expect("fast_ok checked");
            if op == 0x08 {
                m.finish_run();
                let k = lock_crypto(&self.crypto);
                return Ok(m.read6(cdb, data, k.state.as_ref()));
            }
            let k = lock_crypto(&self.crypto);
            return Ok(m.write6(cdb, data, k.encrypting()));
        }
        let dir = self.lib.dir().to_path_buf();
        self.fast = None;
        if let Some(m) = self.media.as_mut() {
            m.forget_read_ahead();
        }
        let index = self.index;
        let ((c, view), id) = crate::state::transact_id(&dir, |st| {
            let c = self.slow(st, cdb, data);
            (c, crate::state::drive_view(st, index))
        })
        .map_err(|e| TransportError::Other {
            device: self.describe(),
            message: e.to_string(),
        })?;
        if matches!(op, 0x08 | 0x0a) {
            self.fast = id;
            self.fast_view = view;
        }
        Ok(c)
    }

    fn describe(&self) -> String {
        format!("vtl {} drive {}", self.lib.dir().display(), self.index)
    }
}

impl Drop for VirtualDrive {
    fn drop(&mut self) {
        if self.media.is_none() {
            return;
        }
        let dir = self.lib.dir().to_path_buf();
        let r = crate::state::transact(&dir, |st| {
            let current = match (&self.media, &st.drives[self.index].loaded) {
                (Some(m), Some(l)) => m.load_seq == l.load_seq && m.barcode == l.barcode,
                _ => false,
            };
            if current {
                if let Some(m) = self.media.as_mut() {
                    m.finish_run();
                }
                self.persist(st);
            } else if let Some(m) = self.media.take() {
                Self::release(m, false);
            }
        });
        if let Err(e) = r {
            tracing::error!(
                drive = self.index,
                "could not save the drive state on close: {e}"
            );
            if let Some(m) = self.media.take() {
                Self::release(m, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(add: u8, idp: bool, psum: u8, units: u8, sizes: &[u16]) -> PartitionRequest {
        PartitionRequest {
            additional: add,
            fdp: false,
            sdp: false,
            idp,
            psum,
            units,
            sizes: sizes.to_vec(),
        }
    }

    #[test]
    fn partition_sizing() {
        assert_eq!(partition_sizes(None, 100, 1), Some(vec![100]));
        // LTFS: p0 = 1 GB (units 10^9), p1 = rest.
        assert_eq!(
            partition_sizes(Some(&req(1, true, 3, 9, &[1, 0xffff])), 4096, 1),
            Some(vec![954, 3142])
        );
        // Too big for a small cartridge: the 5% default instead.
        assert_eq!(
            partition_sizes(Some(&req(1, true, 3, 9, &[1, 0xffff])), 100, 1),
            Some(vec![5, 95])
        );
        assert_eq!(
            partition_sizes(Some(&req(1, true, 3, 9, &[0, 0])), 200, 1),
            Some(vec![10, 190])
        );
        assert_eq!(
            partition_sizes(Some(&req(1, true, 2, 0, &[10, 20])), 200, 1),
            Some(vec![10, 20])
        );
        assert_eq!(
            partition_sizes(Some(&req(3, true, 3, 6, &[1, 1, 1, 0xffff])), 200, 3),
            Some(vec![1, 1, 1, 197])
        );
        assert_eq!(
            partition_sizes(Some(&req(2, true, 3, 6, &[1, 1, 0xffff])), 200, 1),
            None
        );
        assert_eq!(
            partition_sizes(Some(&req(1, false, 0, 0, &[])), 200, 1),
            Some(vec![10, 190])
        );
    }
}
