//! The Linux SCSI generic transport: the SG_IO ioctl with a version-3 `sg_io_hdr` on /dev/sg* nodes.
//!
//! Host and driver status are kept in the error (a Fibre Channel link reset shows up there, not as
//! sense). Buffers that are not page-aligned are bounced through an aligned one.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{AlignedBuf, Completion, DataDir, Status, Transport, TransportError};

const SG_IO: libc::c_ulong = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_TO_DEV: libc::c_int = -2;
const SG_DXFER_FROM_DEV: libc::c_int = -3;
const SG_MAJOR: u32 = 21;
const SENSE_LEN: usize = 64;

// Host status codes that mean "timed out" (DID_TIME_OUT) and driver status DRIVER_TIMEOUT.
const DID_TIME_OUT: u16 = 0x03;
const DRIVER_TIMEOUT: u16 = 0x06;
const DRIVER_SENSE: u16 = 0x08;

/// `struct sg_io_hdr` from <scsi/sg.h> (88 bytes on 64-bit Linux). libc does not define it.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SgIoHdr>() == 88);

pub struct SgDevice {
    file: File,
    path: PathBuf,
    bounce: AlignedBuf,
}

impl SgDevice {
    /// Opens a SCSI generic node. Refuses anything that is not an sg character device (major 21): the
    /// st/nst nodes rewind or write filemarks behind our back on close.
    pub fn open(path: &Path) -> Result<SgDevice, TransportError> {
        let err = |source| TransportError::Io {
            device: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        if !meta.file_type().is_char_device() || major(meta.rdev()) != SG_MAJOR {
            return Err(TransportError::Other {
                device: path.display().to_string(),
                message: "not a SCSI generic device (/dev/sgN); use the sg node, not st/nst/sch"
                    .into(),
            });
        }
        // O_NONBLOCK so the open itself never waits for the device; cleared right after.
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(err)?;
        // SAFETY: fcntl on a file descriptor we own.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
                return Err(err(io::Error::last_os_error()));
            }
        }
        Ok(SgDevice {
            file,
            path: path.to_path_buf(),
            bounce: AlignedBuf::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn major(dev: u64) -> u32 {
    libc::major(dev)
}

impl Transport for SgDevice {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        timeout: Duration,
    ) -> Result<Completion, TransportError> {
        let device = || self.path.display().to_string();
        if cdb.is_empty() || cdb.len() > 16 {
            return Err(TransportError::Other {
                device: device(),
                message: format!("bad CDB length {}", cdb.len()),
            });
        }
        let (dir, len) = match &data {
            DataDir::None => (SG_DXFER_NONE, 0),
            DataDir::In(b) => (SG_DXFER_FROM_DEV, b.len()),
            DataDir::Out(b) => (SG_DXFER_TO_DEV, b.len()),
        };
        // Bounce unaligned buffers through our aligned one.
        let aligned = match &data {
            DataDir::None => true,
            DataDir::In(b) => AlignedBuf::is_aligned(b),
            DataDir::Out(b) => AlignedBuf::is_aligned(b),
        };
        if !aligned {
            self.bounce.resize(len);
            if let DataDir::Out(b) = &data {
                self.bounce.copy_from_slice(b);
            }
        }
        let dxferp: *mut libc::c_void = match (&data, aligned) {
            (DataDir::None, _) => std::ptr::null_mut(),
            (_, false) => self.bounce.as_mut_ptr().cast(),
            (DataDir::In(b), true) => b.as_ptr() as *mut libc::c_void,
            (DataDir::Out(b), true) => b.as_ptr() as *mut libc::c_void,
        };
        let mut sense = [0u8; SENSE_LEN];
        let mut hdr = SgIoHdr {
            interface_id: b'S' as libc::c_int,
            dxfer_direction: dir,
            cmd_len: cdb.len() as u8,
            mx_sb_len: SENSE_LEN as u8,
            iovec_count: 0,
            dxfer_len: len as libc::c_uint,
            dxferp,
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: timeout.as_millis().min(u32::MAX as u128 - 1) as libc::c_uint,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        };
        // SAFETY: hdr points at live buffers (cdb, sense, data or bounce) for the duration of the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), SG_IO, &mut hdr as *mut SgIoHdr) };
        if rc < 0 {
            return Err(TransportError::Io {
                device: device(),
                source: io::Error::last_os_error(),
            });
        }
        let transferred = len.saturating_sub(hdr.resid.max(0) as usize);
        if !aligned && let DataDir::In(b) = data {
            b[..transferred].copy_from_slice(&self.bounce[..transferred]);
        }
        if hdr.host_status == DID_TIME_OUT || (hdr.driver_status & 0x0f) as u16 == DRIVER_TIMEOUT {
            return Err(TransportError::Timeout {
                device: device(),
                timeout,
            });
        }
        let driver = hdr.driver_status & !DRIVER_SENSE;
        if hdr.host_status != 0 || (driver & 0x0f) != 0 {
            return Err(TransportError::Host {
                device: device(),
                host: hdr.host_status,
                driver: hdr.driver_status,
            });
        }
        let sense_len = (hdr.sb_len_wr as usize).min(SENSE_LEN);
        Ok(Completion {
            status: Status(hdr.status),
            sense: sense[..sense_len].to_vec(),
            transferred,
        })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A SCSI generic node found in sysfs.
#[derive(Debug, Clone)]
pub struct SgNode {
    pub path: PathBuf,
    /// Peripheral device type from sysfs (1 tape, 8 changer).
    pub device_type: u8,
    pub vendor: String,
    pub model: String,
    /// H:C:T:L of the SCSI device.
    pub hctl: String,
}

/// Lists /dev/sg* nodes with their types, from /sys/class/scsi_generic (no commands sent).
pub fn scan_sysfs(sys_class: &Path) -> Vec<SgNode> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_class) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let dev = e.path().join("device");
        let read = |f: &str| {
            std::fs::read_to_string(dev.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let Ok(device_type) = read("type").parse::<u8>() else {
            continue;
        };
        let hctl = std::fs::canonicalize(&dev)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default();
        out.push(SgNode {
            path: Path::new("/dev").join(&name),
            device_type,
            vendor: read("vendor"),
            model: read("model"),
            hctl,
        });
    }
    out.sort_by_key(|n| {
        let s = n.path.to_string_lossy().to_string();
        (s.len(), s)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_sg_nodes() {
        let e = SgDevice::open(Path::new("/dev/null")).err().unwrap();
        assert!(e.to_string().contains("not a SCSI generic device"), "{e}");
        let e = SgDevice::open(Path::new("/nonexistent/sg9")).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/sg9"), "{e}");
    }

    #[test]
    fn major_number_decoding() {
        assert_eq!(major(libc::makedev(21, 3)), 21);
        assert_eq!(major(libc::makedev(4096, 1)), 4096);
    }
}
