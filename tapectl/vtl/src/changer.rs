//! The SCSI medium changer of the virtual TS3200 (SMC-3): element status, moves, door lock.

use std::time::Duration;

use scsi::{Completion, DataDir, DeviceType, Inquiry, SenseKey, Transport, TransportError};

use crate::state::{Loaded, Slot, State};
use crate::util::{
    self, ModeSenseCdb, bad_cdb, bad_opcode, illegal, parse_mode_sense, respond, ta_bit, u16_at,
    u24_at,
};
use crate::{
    FIRST_DRIVE_ADDRESS, FIRST_IE_ADDRESS, FIRST_STORAGE_ADDRESS, Fault, Library,
    TRANSPORT_ADDRESS, cart,
};

/// The medium changer. Implements [`scsi::Transport`]; every command is one short transaction on
/// `library.json`.
pub struct VirtualChanger {
    lib: Library,
    /// Door events this handle has already reported (UNIT ATTENTION 28/01 for newer ones).
    seen_door_events: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    Transport,
    Storage(usize),
    Ie(usize),
    Drive(usize),
}

impl Elem {
    pub fn from_address(st: &State, a: u16) -> Option<Elem> {
        let (ns, ni, nd) = (st.storage.len(), st.ie.len(), st.drives.len());
        let a = a as usize;
        let within = |base: u16, n: usize| a >= base as usize && a < base as usize + n;
        if a == TRANSPORT_ADDRESS as usize {
            Some(Elem::Transport)
        } else if within(FIRST_IE_ADDRESS, ni) {
            Some(Elem::Ie(a - FIRST_IE_ADDRESS as usize))
        } else if within(FIRST_DRIVE_ADDRESS, nd) {
            Some(Elem::Drive(a - FIRST_DRIVE_ADDRESS as usize))
        } else if within(FIRST_STORAGE_ADDRESS, ns) {
            Some(Elem::Storage(a - FIRST_STORAGE_ADDRESS as usize))
        } else {
            None
        }
    }
    pub fn address(self) -> u16 {
        match self {
            Elem::Transport => TRANSPORT_ADDRESS,
            Elem::Storage(i) => FIRST_STORAGE_ADDRESS + i as u16,
            Elem::Ie(i) => FIRST_IE_ADDRESS + i as u16,
            Elem::Drive(i) => FIRST_DRIVE_ADDRESS + i as u16,
        }
    }
    fn type_code(self) -> u8 {
        match self {
            Elem::Transport => 1,
            Elem::Storage(_) => 2,
            Elem::Ie(_) => 3,
            Elem::Drive(_) => 4,
        }
    }
}

impl VirtualChanger {
    pub(crate) fn new(lib: Library, seen_door_events: u64) -> Self {
        Self {
            lib,
            seen_door_events,
        }
    }

    fn run(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>) -> Completion {
        let op = cdb[0];
        st.settle_faults(util::now_secs());
        let exempt = matches!(op, 0x12 | 0x03 | 0xa0);
        if !exempt {
            if let Some([asc, ascq]) = st.changer_ua.pop_front() {
                return util::fail(SenseKey::UnitAttention, asc, ascq);
            }
            if st.door_events != self.seen_door_events {
                self.seen_door_events = st.door_events;
                return util::fail(SenseKey::UnitAttention, 0x28, 0x01);
            }
        }
        match op {
            0x00 => Completion::good(0),
            0x03 => self.request_sense(st, cdb, data),
            0x07 => Completion::good(0),
            0x12 => {
                let inq = Inquiry {
                    device_type: DeviceType::Changer,
                    removable: true,
                    vendor: "IBM".into(),
                    product: "3573-TL".into(),
                    revision: "F.11".into(),
                };
                util::inquiry(cdb, data, &inq, 0x08, &st.spec.serial)
            }
            0x15 | 0x55 | 0x16 | 0x17 | 0xe7 => Completion::good(0),
            0x1a | 0x5a => mode_sense(st, cdb, data),
            0x1e => {
                st.door_locked = cdb[4] & 0x01 != 0;
                Completion::good(0)
            }
            0x2b => {
                // POSITION TO ELEMENT: nothing to do, but check the address.
                match Elem::from_address(st, u16_at(cdb, 4)) {
                    Some(_) => Completion::good(0),
                    None => illegal(0x21, 0x01),
                }
            }
            0xa0 => util::report_luns(cdb, data),
            0xa5 => self.move_medium(st, cdb),
            0xb8 => read_element_status(st, cdb, data),
            _ => bad_opcode(),
        }
    }

    fn request_sense(&mut self, st: &mut State, cdb: &[u8], data: DataDir<'_>) -> Completion {
        if cdb[1] & 0x01 != 0 {
            return bad_cdb();
        }
        let alloc = cdb[4] as usize;
        let sense = if let Some([asc, ascq]) = st.changer_ua.pop_front() {
            scsi::Sense::new(SenseKey::UnitAttention, asc, ascq)
        } else if st.door_events != self.seen_door_events {
            self.seen_door_events = st.door_events;
            scsi::Sense::new(SenseKey::UnitAttention, 0x28, 0x01)
        } else {
            scsi::Sense::new(SenseKey::NoSense, 0, 0)
        };
        respond(data, &sense.encode_fixed(), alloc)
    }

    fn move_medium(&mut self, st: &mut State, cdb: &[u8]) -> Completion {
        let transport = u16_at(cdb, 2);
        if transport != 0 && transport != TRANSPORT_ADDRESS {
            return illegal(0x21, 0x01);
        }
        if cdb[10] & 0x01 != 0 {
            return bad_cdb(); // INVERT: LTO cartridges cannot be turned over
        }
        let (Some(src), Some(dst)) = (
            Elem::from_address(st, u16_at(cdb, 4)),
            Elem::from_address(st, u16_at(cdb, 6)),
        ) else {
            return illegal(0x21, 0x01);
        };
        if src == Elem::Transport || dst == Elem::Transport {
            return illegal(0x21, 0x01);
        }
        let Some((barcode, source)) = contents(st, src) else {
            return illegal(0x3b, 0x0e);
        };
        if src == dst {
            return Completion::good(0);
        }
        if contents(st, dst).is_some() {
            return illegal(0x3b, 0x0d);
        }
        // Take it out of the source. A drive unloads automatically (TS3200), unless removal is prevented.
        let carried_source = match src {
            Elem::Drive(d) => {
                if st.drives[d].prevent {
                    return illegal(0x53, 0x02);
                }
                st.drives[d].loaded = None;
                source
            }
            Elem::Storage(i) => {
                st.storage[i] = None;
                Some(src.address())
            }
            Elem::Ie(i) => {
                st.ie[i] = None;
                Some(src.address())
            }
            Elem::Transport => unreachable!("rejected above"),
        };
        match dst {
            Elem::Storage(i) => {
                st.storage[i] = Some(Slot {
                    barcode,
                    source: carried_source,
                    imported: false,
                })
            }
            Elem::Ie(i) => {
                st.ie[i] = Some(Slot {
                    barcode,
                    source: carried_source,
                    imported: false,
                })
            }
            Elem::Drive(d) => {
                st.load_counter += 1;
                let dir = self.lib.cartridge_dir(&barcode);
                st.drives[d].loaded = Some(Loaded {
                    barcode: barcode.clone(),
                    source: carried_source,
                    threaded: true,
                    partition: 0,
                    block: 0,
                    last_write: None,
                    load_seq: st.load_counter,
                    version: 0,
                    vcr_bumped: false,
                });
                st.drives[d].pending_ua.push_back([0x28, 0x00]);
                if let Err(e) = loaded_into_drive(st, d, &dir) {
                    tracing::warn!(cartridge = %barcode, drive = d, "load bookkeeping failed: {e}");
                }
            }
            Elem::Transport => unreachable!("rejected above"),
        }
        Completion::good(0)
    }
}

/// What happens when a cartridge is threaded in a drive: mount count, and cleaning for a cleaner.
pub(crate) fn loaded_into_drive(
    st: &mut State,
    d: usize,
    dir: &std::path::Path,
) -> Result<(), crate::VtlError> {
    let mut meta = cart::load_meta(dir)?;
    if meta.cleaning {
        if meta.cleaning_uses_left > 0 {
            meta.cleaning_uses_left -= 1;
            st.faults
                .retain(|e| !matches!(e.fault, Fault::NeedsCleaning { drive } if drive == d));
            st.drives[d].tapealert &= !(ta_bit(0x14) | ta_bit(0x15) | ta_bit(0x16) | ta_bit(0x17));
            tracing::info!(drive = d, cartridge = %meta.barcode, uses_left = meta.cleaning_uses_left, "drive cleaned");
        } else {
            st.drives[d].tapealert |= ta_bit(0x16);
            tracing::warn!(drive = d, cartridge = %meta.barcode, "expired cleaning cartridge");
        }
    }
    meta.mounts += 1;
    meta.last_mount_bytes_written = 0;
    meta.last_mount_bytes_read = 0;
    cart::save_meta(dir, &meta)
}

fn contents(st: &State, e: Elem) -> Option<(String, Option<u16>)> {
    match e {
        Elem::Transport => None,
        Elem::Storage(i) => st.storage[i]
            .as_ref()
            .map(|s| (s.barcode.clone(), s.source)),
        Elem::Ie(i) => st.ie[i].as_ref().map(|s| (s.barcode.clone(), s.source)),
        Elem::Drive(d) => st.drives[d]
            .loaded
            .as_ref()
            .map(|l| (l.barcode.clone(), l.source)),
    }
}

fn mode_sense(st: &State, cdb: &[u8], data: DataDir<'_>) -> Completion {
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
    let mut add = |code: u8| {
        let mut p = match code {
            0x1d => {
                let mut p = vec![0u8; 20];
                p[0] = 0x1d;
                p[1] = 0x12;
                let v = [
                    TRANSPORT_ADDRESS,
                    1,
                    FIRST_STORAGE_ADDRESS,
                    st.storage.len() as u16,
                    FIRST_IE_ADDRESS,
                    st.ie.len() as u16,
                    FIRST_DRIVE_ADDRESS,
                    st.drives.len() as u16,
                ];
                for (i, x) in v.iter().enumerate() {
                    p[2 + 2 * i..4 + 2 * i].copy_from_slice(&x.to_be_bytes());
                }
                p
            }
            0x1e => vec![0x1e, 0x02, 0x00, 0x00],
            0x1f => {
                let mut p = vec![0u8; 20];
                p[0] = 0x1f;
                p[1] = 0x12;
                p[2] = 0x0e; // StorDT, StorI/E, StorST
                p[4..8].copy_from_slice(&[0x0e, 0x0e, 0x0e, 0x0e]); // moves MT/ST/IE/DT -> ST, IE, DT
                p
            }
            _ => return,
        };
        if changeable {
            p[2..].fill(0);
        }
        pages.extend_from_slice(&p);
    };
    match page {
        0x1d..=0x1f => add(page),
        0x3f => {
            add(0x1d);
            add(0x1e);
            add(0x1f);
        }
        _ => return bad_cdb(),
    }
    let mut resp = if ten { vec![0u8; 8] } else { vec![0u8; 4] };
    resp.extend_from_slice(&pages);
    if ten {
        let len = (resp.len() - 2) as u16;
        resp[0..2].copy_from_slice(&len.to_be_bytes());
    } else {
        resp[0] = (resp.len() - 1).min(255) as u8;
    }
    respond(data, &resp, alloc)
}

fn read_element_status(st: &State, cdb: &[u8], data: DataDir<'_>) -> Completion {
    let voltag = cdb[1] & 0x10 != 0;
    let etype = cdb[1] & 0x0f;
    let start = u16_at(cdb, 2);
    let count = u16_at(cdb, 4) as usize;
    let dvcid = cdb[6] & 0x01 != 0;
    let alloc = u24_at(cdb, 7) as usize;
    if etype > 4 {
        return bad_cdb();
    }
    if dvcid && !st.spec.dvcid_supported {
        return bad_cdb();
    }
    let mut all: Vec<Elem> = Vec::new();
    if etype == 0 || etype == 1 {
        all.push(Elem::Transport);
    }
    if etype == 0 || etype == 2 {
        all.extend((0..st.storage.len()).map(Elem::Storage));
    }
    if etype == 0 || etype == 3 {
        all.extend((0..st.ie.len()).map(Elem::Ie));
    }
    if etype == 0 || etype == 4 {
        all.extend((0..st.drives.len()).map(Elem::Drive));
    }
    // Report from the element at the starting address (or the first one after it in report order), then
    // onwards in report order, so a caller can page through with "last address + 1".
    let from = all
        .iter()
        .position(|e| e.address() == start)
        .or_else(|| all.iter().position(|e| e.address() >= start));
    let chosen: Vec<Elem> = from.map_or(Vec::new(), |f| {
        all[f..].iter().copied().take(count).collect()
    });

    let mut body = Vec::new();
    let mut i = 0;
    while i < chosen.len() {
        let t = chosen[i].type_code();
        let mut j = i;
        while j < chosen.len() && chosen[j].type_code() == t {
            j += 1;
        }
        let with_id = dvcid && t == 4;
        let dlen = 12 + if voltag { 36 } else { 0 } + 4 + if with_id { 34 } else { 0 };
        let mut page = vec![0u8; 8];
        page[0] = t;
        page[1] = if voltag { 0x80 } else { 0 };
        page[2..4].copy_from_slice(&(dlen as u16).to_be_bytes());
        let bytes = (dlen * (j - i)) as u32;
        page[5..8].copy_from_slice(&bytes.to_be_bytes()[1..]);
        for &e in &chosen[i..j] {
            page.extend_from_slice(&descriptor(st, e, voltag, with_id, dlen));
        }
        body.extend_from_slice(&page);
        i = j;
    }
    let mut resp = vec![0u8; 8];
    let first = chosen.first().map_or(0, |e| e.address());
    resp[0..2].copy_from_slice(&first.to_be_bytes());
    resp[2..4].copy_from_slice(&(chosen.len() as u16).to_be_bytes());
    resp[5..8].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    resp.extend_from_slice(&body);
    respond(data, &resp, alloc)
}

fn descriptor(st: &State, e: Elem, voltag: bool, with_id: bool, dlen: usize) -> Vec<u8> {
    let mut d = vec![0u8; dlen];
    d[0..2].copy_from_slice(&e.address().to_be_bytes());
    let (full, source, imported) = match e {
        Elem::Transport => (None, None, false),
        Elem::Storage(i) => (
            st.storage[i].as_ref().map(|s| s.barcode.as_str()),
            st.storage[i].as_ref().and_then(|s| s.source),
            false,
        ),
        Elem::Ie(i) => (
            st.ie[i].as_ref().map(|s| s.barcode.as_str()),
            st.ie[i].as_ref().and_then(|s| s.source),
            st.ie[i].as_ref().is_some_and(|s| s.imported),
        ),
        Elem::Drive(i) => (
            st.drives[i].loaded.as_ref().map(|l| l.barcode.as_str()),
            st.drives[i].loaded.as_ref().and_then(|l| l.source),
            false,
        ),
    };
    let mut flags = if full.is_some() { 0x01 } else { 0 };
    match e {
        Elem::Transport => {}
        Elem::Storage(_) | Elem::Drive(_) => flags |= 0x08,
        Elem::Ie(_) => flags |= 0x30 | 0x08 | if imported { 0x02 } else { 0 },
    }
    d[2] = flags;
    if let (Some(_), Some(src)) = (full, source) {
        d[9] = 0x80;
        d[10..12].copy_from_slice(&src.to_be_bytes());
    }
    let mut at = 12;
    if voltag {
        if let Some(b) = full {
            util::pad(&mut d[at..at + 32], b);
        }
        at += 36;
    }
    if with_id && let Elem::Drive(i) = e {
        {
            let model = st.spec.drives[i];
            d[at] = 0x02; // code set: ASCII
            d[at + 1] = 0x01; // identifier type: T10 vendor identification
            d[at + 3] = 34;
            util::pad(&mut d[at + 4..at + 12], "IBM");
            util::pad(&mut d[at + 12..at + 28], model.product());
            util::pad(&mut d[at + 28..at + 38], &st.drive_serial(i));
        }
    }
    d
}

impl Transport for VirtualChanger {
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
        let dir = self.lib.dir().to_path_buf();
        crate::state::transact(&dir, |st| self.run(st, cdb, data)).map_err(|e| {
            TransportError::Other {
                device: self.describe(),
                message: e.to_string(),
            }
        })
    }

    fn describe(&self) -> String {
        format!("vtl {} changer", self.lib.dir().display())
    }
}
