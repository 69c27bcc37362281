//! Opening transports for the configured library: the virtual TS3200, SG_IO nodes found by type and
//! serial, or iSCSI LUNs. Everything above gets `Box<dyn Transport>` and runs the same code.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use scsi::{DeviceType, Transport};
use serde::Serialize;

use crate::config::LibraryConfig;

pub type BoxedTransport = Box<dyn Transport>;

pub enum Backend {
    Virtual(vtl::Library),
    Sgio {
        changer: PathBuf,
        drives: Vec<PathBuf>,
    },
    Iscsi {
        url: String,
        changer_lun: u16,
        drive_luns: Vec<u16>,
        initiator: String,
    },
}

/// A device found on the host (for `tapectl devices`).
#[derive(Debug, Clone, Serialize)]
pub struct FoundDevice {
    pub path: String,
    pub kind: &'static str,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub serial: Option<String>,
    /// Why the device could not be asked (permissions, busy), when it could not.
    pub error: Option<String>,
}

impl Backend {
    pub fn open(cfg: &LibraryConfig) -> Result<Backend> {
        Ok(match cfg {
            LibraryConfig::Virtual { dir } => Backend::Virtual(vtl::Library::open(dir).with_context(|| {
                format!("cannot open the virtual library at {} (create it with `tapectl vtl create`)", dir.display())
            })?),
            LibraryConfig::Sgio { changer, drives } => {
                let nodes = scsi::sgio::scan_sysfs(std::path::Path::new("/sys/class/scsi_generic"));
                let changer = match changer {
                    Some(c) => resolve_sg(c, &nodes, 8)?,
                    None => match nodes.iter().filter(|n| n.device_type == 8).collect::<Vec<_>>().as_slice() {
                        [one] => one.path.clone(),
                        [] => bail!("no medium changer found among /dev/sg* (set [library] changer)"),
                        many => bail!(
                            "{} medium changers found ({}); set [library] changer",
                            many.len(),
                            many.iter().map(|n| n.path.display().to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    },
                };
                let drives = if drives.is_empty() {
                    nodes.iter().filter(|n| n.device_type == 1).map(|n| n.path.clone()).collect()
                } else {
                    drives.iter().map(|d| resolve_sg(d, &nodes, 1)).collect::<Result<Vec<_>>>()?
                };
                Backend::Sgio { changer, drives }
            }
            LibraryConfig::Iscsi { url, changer_lun, drive_luns, initiator } => Backend::Iscsi {
                url: url.clone(),
                changer_lun: *changer_lun,
                drive_luns: drive_luns.clone(),
                initiator: initiator.clone(),
            },
        })
    }

    pub fn changer_transport(&self) -> Result<BoxedTransport> {
        match self {
            Backend::Virtual(lib) => Ok(Box::new(lib.changer())),
            Backend::Sgio { changer, .. } => Ok(Box::new(scsi::sgio::SgDevice::open(changer)?)),
            Backend::Iscsi {
                url,
                changer_lun,
                initiator,
                ..
            } => iscsi_open(url, *changer_lun, initiator),
        }
    }

    pub fn drive_count(&self) -> usize {
        match self {
            Backend::Virtual(lib) => lib.drive_count(),
            Backend::Sgio { drives, .. } => drives.len(),
            Backend::Iscsi { drive_luns, .. } => drive_luns.len(),
        }
    }

    /// The transport of the `index`th configured drive device (not the changer's drive number: the
    /// library pairs the two by serial).
    pub fn drive_transport(&self, index: usize) -> Result<BoxedTransport> {
        match self {
            Backend::Virtual(lib) => Ok(Box::new(lib.drive(index)?)),
            Backend::Sgio { drives, .. } => {
                let path = drives
                    .get(index)
                    .with_context(|| format!("no drive device #{index}"))?;
                Ok(Box::new(scsi::sgio::SgDevice::open(path)?))
            }
            Backend::Iscsi {
                url,
                drive_luns,
                initiator,
                ..
            } => {
                let lun = drive_luns
                    .get(index)
                    .with_context(|| format!("no drive LUN #{index}"))?;
                iscsi_open(url, *lun, initiator)
            }
        }
    }

    /// Every changer and drive this backend can reach, with identities.
    pub fn devices(&self) -> Vec<FoundDevice> {
        let mut out = Vec::new();
        let mut probe = |path: String, t: Result<BoxedTransport>| {
            let mut d = FoundDevice {
                path,
                kind: "unknown",
                vendor: String::new(),
                product: String::new(),
                revision: String::new(),
                serial: None,
                error: None,
            };
            match t.and_then(|mut t| {
                let i = scsi::inquiry::inquiry(&mut t)?;
                let s = scsi::inquiry::serial_number(&mut t)?;
                Ok((i, s))
            }) {
                Ok((i, s)) => {
                    d.kind = match i.device_type {
                        DeviceType::Tape => "tape drive",
                        DeviceType::Changer => "medium changer",
                        other => other.name(),
                    };
                    (d.vendor, d.product, d.revision, d.serial) =
                        (i.vendor, i.product, i.revision, s);
                }
                Err(e) => d.error = Some(format!("{e:#}")),
            }
            out.push(d);
        };
        match self {
            Backend::Sgio { .. } => {
                for n in scsi::sgio::scan_sysfs(std::path::Path::new("/sys/class/scsi_generic")) {
                    if matches!(n.device_type, 1 | 8) {
                        probe(
                            n.path.display().to_string(),
                            scsi::sgio::SgDevice::open(&n.path)
                                .map(|d| Box::new(d) as BoxedTransport)
                                .map_err(Into::into),
                        );
                    }
                }
            }
            _ => {
                probe(self.changer_name(), self.changer_transport());
                for i in 0..self.drive_count() {
                    probe(self.drive_name(i), self.drive_transport(i));
                }
            }
        }
        out
    }

    pub fn changer_name(&self) -> String {
        match self {
            Backend::Virtual(lib) => lib.changer().describe(),
            Backend::Sgio { changer, .. } => changer.display().to_string(),
            Backend::Iscsi {
                url, changer_lun, ..
            } => format!("{url}/{changer_lun}"),
        }
    }

    pub fn drive_name(&self, index: usize) -> String {
        match self {
            Backend::Virtual(lib) => lib
                .drive(index)
                .map(|d| d.describe())
                .unwrap_or_else(|_| format!("virtual drive #{index}")),
            Backend::Sgio { drives, .. } => drives
                .get(index)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            Backend::Iscsi {
                url, drive_luns, ..
            } => format!("{url}/{}", drive_luns.get(index).copied().unwrap_or(0)),
        }
    }
}

fn iscsi_open(url: &str, lun: u16, initiator: &str) -> Result<BoxedTransport> {
    let full = format!("{url}/{lun}");
    let parsed: iscsi::IscsiUrl = full
        .parse()
        .with_context(|| format!("bad iSCSI URL {full}"))?;
    Ok(Box::new(iscsi::IscsiDevice::connect(&parsed, initiator)?))
}

/// A configured device: a path (/dev/sgN, or a by-id link to one) or `serial:<serial>`.
fn resolve_sg(spec: &str, nodes: &[scsi::sgio::SgNode], want_type: u8) -> Result<PathBuf> {
    if let Some(serial) = spec.strip_prefix("serial:") {
        for n in nodes.iter().filter(|n| n.device_type == want_type) {
            let Ok(mut d) = scsi::sgio::SgDevice::open(&n.path) else {
                continue;
            };
            if scsi::inquiry::serial_number(&mut d)
                .ok()
                .flatten()
                .as_deref()
                == Some(serial)
            {
                return Ok(n.path.clone());
            }
        }
        bail!("no /dev/sg* device with serial {serial}");
    }
    let path =
        std::fs::canonicalize(spec).with_context(|| format!("device {spec} does not exist"))?;
    Ok(path)
}
