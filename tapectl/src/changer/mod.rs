//! The SCSI medium changer command set (SMC-3) over any transport: element addresses (MODE SENSE page
//! 0x1D), element status with barcodes and drive serials, MOVE MEDIUM, INITIALIZE ELEMENT STATUS and
//! PREVENT/ALLOW MEDIUM REMOVAL. Each command is a CDB builder here plus a pure decoder.

pub mod element_status;

use std::thread::sleep;
use std::time::{Duration, Instant};

use scsi::{DataDir, DeviceType, Inquiry, ScsiError, SenseKey, Transport, be, execute};
use serde::Serialize;

pub use element_status::{DriveIdentifier, Element, ElementKind};

/// Robot moves and element status can take minutes on a real library (PBS uses 5 min).
const MOVE_TIMEOUT: Duration = Duration::from_secs(300);
const STATUS_TIMEOUT: Duration = Duration::from_secs(300);
const INIT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long to wait for a changer that says it is becoming ready (after a door close, an inventory).
const BECOMING_READY_WAIT: Duration = Duration::from_secs(300);
/// Some changers read only two of the three allocation-length bytes: never ask for more than this.
const ALLOC: u32 = 0xffff;

#[derive(Debug, thiserror::Error)]
pub enum ChangerError {
    #[error("{device} is a {found}, not a medium changer")]
    NotAChanger { device: String, found: &'static str },
    #[error(transparent)]
    Scsi(#[from] ScsiError),
    #[error("{0}")]
    Inconsistent(String),
}

/// Element address ranges from MODE SENSE page 0x1D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ElementAddresses {
    pub transport: (u16, u16),
    pub storage: (u16, u16),
    pub import_export: (u16, u16),
    pub drive: (u16, u16),
}

impl ElementAddresses {
    pub fn range(&self, kind: ElementKind) -> (u16, u16) {
        match kind {
            ElementKind::Transport => self.transport,
            ElementKind::Storage => self.storage,
            ElementKind::ImportExport => self.import_export,
            ElementKind::Drive => self.drive,
        }
    }

    /// Decodes the MODE SENSE(6) response holding page 0x1D (after the 4-byte header and any block
    /// descriptors).
    pub fn decode_mode_sense6(b: &[u8]) -> Option<ElementAddresses> {
        let bd_len = *b.get(3)? as usize;
        Self::decode_page(b.get(4 + bd_len..)?)
    }

    pub fn decode_page(p: &[u8]) -> Option<ElementAddresses> {
        if p.first()? & 0x3f != 0x1d || *p.get(1)? < 0x12 {
            return None;
        }
        let pair = |at| Some((be::u16_at(p, at)?, be::u16_at(p, at + 2)?));
        Some(ElementAddresses {
            transport: pair(2)?,
            storage: pair(6)?,
            import_export: pair(10)?,
            drive: pair(14)?,
        })
    }
}

pub fn move_medium_cdb(transport: u16, from: u16, to: u16) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xa5;
    be::put(&mut c, 2, 2, transport as u64);
    be::put(&mut c, 4, 2, from as u64);
    be::put(&mut c, 6, 2, to as u64);
    c
}

/// The whole inventory, one list per element kind, in address order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub transports: Vec<Element>,
    pub storage: Vec<Element>,
    pub import_export: Vec<Element>,
    pub drives: Vec<Element>,
    /// Things worth telling the operator (DVCID refused, counts that disagree with page 0x1D).
    pub notes: Vec<String>,
}

impl Inventory {
    pub fn of_kind(&self, kind: ElementKind) -> &[Element] {
        match kind {
            ElementKind::Transport => &self.transports,
            ElementKind::Storage => &self.storage,
            ElementKind::ImportExport => &self.import_export,
            ElementKind::Drive => &self.drives,
        }
    }
    pub fn all(&self) -> impl Iterator<Item = &Element> {
        self.transports
            .iter()
            .chain(&self.storage)
            .chain(&self.import_export)
            .chain(&self.drives)
    }
    pub fn find_barcode(&self, barcode: &str) -> Vec<&Element> {
        self.all()
            .filter(|e| e.volume_tag.as_deref() == Some(barcode))
            .collect()
    }
    pub fn by_address(&self, address: u16) -> Option<&Element> {
        self.all().find(|e| e.address == address)
    }
}

/// Cleaning cartridges are recognised here and nowhere else: LTO cleaners carry a CLN barcode prefix.
pub fn is_cleaning_cartridge(barcode: &str) -> bool {
    barcode
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("CLN"))
}

pub struct Changer<T: Transport> {
    t: T,
    inquiry: Inquiry,
    serial: Option<String>,
}

impl<T: Transport> Changer<T> {
    /// Wraps a transport after checking it is a medium changer.
    pub fn new(mut t: T) -> Result<Self, ChangerError> {
        let inquiry = retry_attention(&mut t, scsi::inquiry::inquiry)?;
        if inquiry.device_type != DeviceType::Changer {
            return Err(ChangerError::NotAChanger {
                device: t.describe(),
                found: inquiry.device_type.name(),
            });
        }
        let serial = retry_attention(&mut t, scsi::inquiry::serial_number)?;
        Ok(Self { t, inquiry, serial })
    }

    pub fn inquiry(&self) -> &Inquiry {
        &self.inquiry
    }
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }
    pub fn describe(&self) -> String {
        self.t.describe()
    }
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.t
    }

    pub fn element_addresses(&mut self) -> Result<ElementAddresses, ChangerError> {
        let mut buf = [0u8; 255];
        let cdb = [0x1a, 0x08, 0x1d, 0, 255, 0];
        let n = self.run(&cdb, DataDir::In(&mut buf), STATUS_TIMEOUT)?;
        ElementAddresses::decode_mode_sense6(&buf[..n.min(buf.len())]).ok_or_else(|| {
            ChangerError::Inconsistent(format!(
                "{}: MODE SENSE page 0x1D (element addresses) is malformed",
                self.t.describe()
            ))
        })
    }

    /// Reads every element, one query per element type (some changers garble an all-types query),
    /// with barcodes, then asks the drives for their serials (DVCID) separately because some changers
    /// refuse that; a refusal becomes a note, not an error.
    pub fn inventory(&mut self) -> Result<Inventory, ChangerError> {
        let addrs = self.element_addresses()?;
        let mut inv = Inventory::default();
        for kind in ElementKind::ALL {
            let (start, count) = addrs.range(kind);
            if count == 0 {
                continue;
            }
            let mut elements = self.read_elements(kind, start, count, true, false)?;
            if kind == ElementKind::Drive {
                match self.read_elements(kind, start, count, false, true) {
                    Ok(with_ids) => {
                        for e in &mut elements {
                            e.drive_id = with_ids
                                .iter()
                                .find(|x| x.address == e.address)
                                .and_then(|x| x.drive_id.clone());
                        }
                        if elements.iter().all(|e| e.drive_id.is_none()) {
                            inv.notes.push("the changer returned no drive identifiers (DVCID); drives are paired by order".into());
                        }
                    }
                    Err(ChangerError::Scsi(e))
                        if e.sense().is_some_and(|s| s.key == SenseKey::IllegalRequest) =>
                    {
                        inv.notes.push(format!("the changer refused drive identifiers (DVCID: {e}); drives are paired by order"));
                    }
                    Err(e) => return Err(e),
                }
            }
            if elements.len() != count as usize {
                inv.notes.push(format!(
                    "{kind:?}: page 0x1D says {count} elements from {start}, READ ELEMENT STATUS returned {}",
                    elements.len()
                ));
            }
            elements.sort_by_key(|e| e.address);
            match kind {
                ElementKind::Transport => inv.transports = elements,
                ElementKind::Storage => inv.storage = elements,
                ElementKind::ImportExport => inv.import_export = elements,
                ElementKind::Drive => inv.drives = elements,
            }
        }
        Ok(inv)
    }

    /// READ ELEMENT STATUS for one element type, continuing from the last address returned until the
    /// range is covered (changers cap elements per response).
    pub fn read_elements(
        &mut self,
        kind: ElementKind,
        start: u16,
        count: u16,
        volume_tag: bool,
        dvcid: bool,
    ) -> Result<Vec<Element>, ChangerError> {
        let end = start as u32 + count as u32;
        let mut out: Vec<Element> = Vec::new();
        let mut next = start as u32;
        let mut buf = vec![0u8; ALLOC as usize];
        while next < end {
            let want = (end - next).min(1000) as u16;
            let cdb = element_status::cdb(Some(kind), next as u16, want, volume_tag, dvcid, ALLOC);
            let n = self.run(&cdb, DataDir::In(&mut buf), STATUS_TIMEOUT)?;
            let decoded = element_status::decode(&buf[..n.min(buf.len())]);
            let got: Vec<Element> = decoded
                .elements
                .into_iter()
                .filter(|e| {
                    e.kind == kind && (e.address as u32) >= next && (e.address as u32) < end
                })
                .collect();
            let Some(last) = got.iter().map(|e| e.address as u32).max() else {
                break;
            };
            out.extend(got);
            next = last + 1;
        }
        Ok(out)
    }

    /// MOVE MEDIUM with the first transport element.
    pub fn move_medium(&mut self, transport: u16, from: u16, to: u16) -> Result<(), ChangerError> {
        self.run(
            &move_medium_cdb(transport, from, to),
            DataDir::None,
            MOVE_TIMEOUT,
        )
        .map(|_| ())
    }

    /// INITIALIZE ELEMENT STATUS: the robot re-scans every slot (slow on real libraries).
    pub fn initialize(&mut self) -> Result<(), ChangerError> {
        self.run(&[0x07, 0, 0, 0, 0, 0], DataDir::None, INIT_TIMEOUT)
            .map(|_| ())
    }

    /// PREVENT (true) or ALLOW (false) MEDIUM REMOVAL: locks the import/export door.
    pub fn prevent_removal(&mut self, prevent: bool) -> Result<(), ChangerError> {
        self.run(
            &[0x1e, 0, 0, 0, prevent as u8, 0],
            DataDir::None,
            STATUS_TIMEOUT,
        )
        .map(|_| ())
    }

    /// Runs a command, retrying after UNIT ATTENTION (door opened, power on) and waiting while the
    /// changer is becoming ready.
    fn run(
        &mut self,
        cdb: &[u8],
        mut data: DataDir<'_>,
        timeout: Duration,
    ) -> Result<usize, ChangerError> {
        let started = Instant::now();
        let mut attentions = 0;
        loop {
            let attempt = match &mut data {
                DataDir::None => DataDir::None,
                DataDir::In(b) => DataDir::In(b),
                DataDir::Out(b) => DataDir::Out(b),
            };
            match execute(&mut self.t, cdb, attempt, timeout) {
                Err(ScsiError::Sense { sense, .. })
                    if sense.is_unit_attention() && attentions < 5 =>
                {
                    attentions += 1;
                    tracing::debug!(device = %self.t.describe(), %sense, "unit attention; retrying");
                }
                Err(ScsiError::Sense { sense, .. })
                    if sense.is_becoming_ready() && started.elapsed() < BECOMING_READY_WAIT =>
                {
                    sleep(Duration::from_secs(1));
                }
                other => return Ok(other?),
            }
        }
    }
}

fn retry_attention<T: Transport, R>(
    t: &mut T,
    f: impl Fn(&mut T) -> Result<R, ScsiError>,
) -> Result<R, ScsiError> {
    let mut tries = 0;
    loop {
        match f(t) {
            Err(ScsiError::Sense { sense, .. }) if sense.is_unit_attention() && tries < 5 => {
                tries += 1
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_1d_decodes_and_rejects_garbage() {
        let mut b = vec![0u8; 4 + 20];
        b[4] = 0x1d;
        b[5] = 0x12;
        for (i, v) in [1u16, 1, 4096, 24, 16, 3, 256, 2].iter().enumerate() {
            be::put(&mut b, 6 + 2 * i, 2, *v as u64);
        }
        let a = ElementAddresses::decode_mode_sense6(&b).unwrap();
        assert_eq!(a.storage, (4096, 24));
        assert_eq!(a.import_export, (16, 3));
        assert_eq!(a.drive, (256, 2));
        // The page's last two reserved bytes are not needed.
        for cut in 0..4 + 18 {
            assert!(ElementAddresses::decode_mode_sense6(&b[..cut]).is_none());
        }
        b[4] = 0x1c;
        assert!(ElementAddresses::decode_mode_sense6(&b).is_none());
    }

    #[test]
    fn cleaning_cartridges() {
        assert!(is_cleaning_cartridge("CLN001L1"));
        assert!(is_cleaning_cartridge("cln123"));
        assert!(!is_cleaning_cartridge("RV0001L6"));
        assert!(!is_cleaning_cartridge("CL"));
    }

    #[test]
    fn move_cdb_layout() {
        assert_eq!(
            move_medium_cdb(1, 4096, 256),
            [0xa5, 0, 0, 1, 0x10, 0, 1, 0, 0, 0, 0, 0]
        );
    }
}
