//! The iSCSI transport: [`scsi::Transport`] over libiscsi, for tgt's virtual tape library in tests and
//! iSCSI-attached libraries in real life.
//!
//! One [`IscsiDevice`] is one iSCSI session to one logical unit ([`IscsiUrl`]). libiscsi is reached
//! through a tiny C shim (csrc/shim.c) so that Rust never mirrors libiscsi's structs. Each command gets
//! the caller's timeout, enforced by the shim's own poll loop: libiscsi 1.19 has `iscsi_set_timeout`,
//! but in whole seconds, fixed when a PDU is created, and its `*_sync` helpers never run the timeout
//! scan while the connection is idle, so a silent target would hang them. After a timeout
//! or a broken connection the session is dropped and the next command logs in again, so the target
//! aborts whatever the old session left behind and the caller sees a unit attention, as after a bus
//! reset on a real HBA.
//!
//! Built without libiscsi-dev, the crate still compiles (`cfg(no_libiscsi)`, see build.rs) and
//! [`IscsiDevice::connect`] says so.

mod url;

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::NonNull;
use std::time::Duration;

use scsi::{Completion, DataDir, Status, Transport, TransportError};

pub use url::{DEFAULT_PORT, IscsiUrl, MAX_LUN, UrlError};

/// Initiator name used when the configuration names none.
pub const DEFAULT_INITIATOR: &str = "iqn.2024-01.org.rackvault:initiator";

/// How long connect-and-login may take unless the caller says otherwise.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the logout on drop may take.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest sense the shim copies (SPC allows 252 bytes).
const SENSE_CAP: usize = 252;

const NO_SUPPORT: &str = "this build has no iSCSI support: install libiscsi-dev and rebuild";

mod ffi {
    use std::ffi::{c_char, c_int};

    /// libiscsi's `struct iscsi_context`, never looked into from Rust.
    #[repr(C)]
    pub struct Ctx {
        _private: [u8; 0],
    }

    #[cfg_attr(not(no_libiscsi), allow(dead_code))] // the catch-all arm of execute's match
    pub const SHIM_ERROR: c_int = -1;
    pub const SHIM_TIMEOUT: c_int = -2;
    pub const SHIM_POLL: c_int = -3;

    #[cfg(not(no_libiscsi))]
    unsafe extern "C" {
        pub fn shim_connect(
            portal: *const c_char,
            target: *const c_char,
            initiator: *const c_char,
            timeout_ms: c_int,
            err: *mut c_char,
            errlen: c_int,
            timed_out: *mut c_int,
        ) -> *mut Ctx;
        pub fn shim_close(ctx: *mut Ctx, timeout_ms: c_int);
        pub fn shim_cmd(
            ctx: *mut Ctx,
            lun: c_int,
            cdb: *const u8,
            cdblen: c_int,
            dir: c_int,
            buf: *mut u8,
            buflen: c_int,
            timeout_ms: c_int,
            xfer: *mut c_int,
            sense: *mut u8,
            sense_cap: c_int,
            sense_len: *mut c_int,
        ) -> c_int;
        pub fn shim_error(ctx: *mut Ctx) -> *const c_char;
    }

    // Without libiscsi: stand-ins with the same signatures. `connect` refuses before reaching them, so
    // no context ever exists and the others are never called.
    #[cfg(no_libiscsi)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn shim_connect(
        _: *const c_char,
        _: *const c_char,
        _: *const c_char,
        _: c_int,
        _: *mut c_char,
        _: c_int,
        _: *mut c_int,
    ) -> *mut Ctx {
        std::ptr::null_mut()
    }
    #[cfg(no_libiscsi)]
    pub unsafe fn shim_close(_: *mut Ctx, _: c_int) {}
    #[cfg(no_libiscsi)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn shim_cmd(
        _: *mut Ctx,
        _: c_int,
        _: *const u8,
        _: c_int,
        _: c_int,
        _: *mut u8,
        _: c_int,
        _: c_int,
        _: *mut c_int,
        _: *mut u8,
        _: c_int,
        _: *mut c_int,
    ) -> c_int {
        SHIM_ERROR
    }
    #[cfg(no_libiscsi)]
    pub unsafe fn shim_error(_: *mut Ctx) -> *const c_char {
        c"no iSCSI support".as_ptr()
    }
}

/// Whether this build can talk iSCSI (false when built without libiscsi-dev).
pub const fn supported() -> bool {
    !cfg!(no_libiscsi)
}

/// One logical unit reached over iSCSI. Commands go to `url.lun` of `url.target_iqn`.
pub struct IscsiDevice {
    url: IscsiUrl,
    desc: String,
    portal: CString,
    target: CString,
    initiator: CString,
    login_timeout: Duration,
    /// The logged-in session; `None` after a timeout or a broken connection until the next command
    /// logs in again.
    ctx: Option<NonNull<ffi::Ctx>>,
}

// SAFETY: a libiscsi context has no thread affinity (no thread-local state, no signal handlers); it
// only must not be used by two threads at once, which `&mut self` on every use guarantees. Not `Sync`.
unsafe impl Send for IscsiDevice {}

impl std::fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("url", &self.desc)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

impl IscsiDevice {
    /// Logs in to the target of `url` as `initiator_iqn` (e.g. [`DEFAULT_INITIATOR`]). Commands then
    /// go to `url.lun`.
    pub fn connect(url: &IscsiUrl, initiator_iqn: &str) -> Result<IscsiDevice, TransportError> {
        Self::connect_with_timeout(url, initiator_iqn, LOGIN_TIMEOUT)
    }

    /// [`IscsiDevice::connect`] with a bound on connect-and-login other than [`LOGIN_TIMEOUT`]; later
    /// logins after a dropped session use it too.
    pub fn connect_with_timeout(
        url: &IscsiUrl,
        initiator_iqn: &str,
        login_timeout: Duration,
    ) -> Result<IscsiDevice, TransportError> {
        let desc = url.to_string();
        let other = |message: String| TransportError::Other {
            device: desc.clone(),
            message,
        };
        if !supported() {
            return Err(other(NO_SUPPORT.to_string()));
        }
        if initiator_iqn.is_empty() || !initiator_iqn.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(other(format!(
                "bad initiator name {initiator_iqn:?}: want an iSCSI name such as {DEFAULT_INITIATOR}"
            )));
        }
        let cstr = |s: &str| CString::new(s).map_err(|_| other(format!("NUL byte in {s:?}")));
        let mut dev = IscsiDevice {
            url: url.clone(),
            portal: cstr(&url.portal())?,
            target: cstr(&url.target_iqn)?,
            initiator: cstr(initiator_iqn)?,
            desc,
            login_timeout,
            ctx: None,
        };
        dev.login()?;
        Ok(dev)
    }

    pub fn url(&self) -> &IscsiUrl {
        &self.url
    }

    fn login(&mut self) -> Result<NonNull<ffi::Ctx>, TransportError> {
        let mut err = [0 as c_char; 256];
        let mut timed_out: c_int = 0;
        // SAFETY: all strings are NUL-terminated and outlive the call; err holds errlen bytes.
        let ctx = unsafe {
            ffi::shim_connect(
                self.portal.as_ptr(),
                self.target.as_ptr(),
                self.initiator.as_ptr(),
                millis(self.login_timeout),
                err.as_mut_ptr(),
                err.len() as c_int,
                &mut timed_out,
            )
        };
        match NonNull::new(ctx) {
            Some(ctx) => {
                tracing::debug!(device = %self.desc, initiator = ?self.initiator, "iSCSI login");
                self.ctx = Some(ctx);
                Ok(ctx)
            }
            None if timed_out != 0 => Err(TransportError::Timeout {
                device: self.desc.clone(),
                timeout: self.login_timeout,
            }),
            None => {
                // SAFETY: shim_connect NUL-terminates err (snprintf).
                let why = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
                Err(TransportError::Other {
                    device: self.desc.clone(),
                    message: format!(
                        "iSCSI login to {} as {} failed: {why}",
                        self.url.portal(),
                        self.initiator.to_string_lossy()
                    ),
                })
            }
        }
    }

    /// Drops the session without waiting for a logout (the connection is suspect).
    fn drop_session(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            // SAFETY: ctx came from shim_connect and is closed exactly once (taken out of the Option).
            unsafe { ffi::shim_close(ctx.as_ptr(), 0) };
        }
    }
}

impl Transport for IscsiDevice {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        timeout: Duration,
    ) -> Result<Completion, TransportError> {
        let device = self.desc.clone();
        let other = |message: String| TransportError::Other {
            device: device.clone(),
            message,
        };
        if cdb.is_empty() || cdb.len() > 16 {
            return Err(other(format!(
                "CDB length {} is not 1 to 16 bytes",
                cdb.len()
            )));
        }
        let (dir, buf, len): (c_int, *mut u8, usize) = match data {
            DataDir::None => (0, std::ptr::null_mut(), 0),
            DataDir::In(b) => (1, b.as_mut_ptr(), b.len()),
            // The shim never writes through an out buffer; libiscsi takes it as `unsigned char *`.
            DataDir::Out(b) => (2, b.as_ptr().cast_mut(), b.len()),
        };
        let buflen = c_int::try_from(len)
            .map_err(|_| other(format!("transfer of {len} bytes is too large")))?;
        let ctx = match self.ctx {
            Some(ctx) => ctx,
            None => {
                tracing::warn!(device = %self.desc, "iSCSI session was dropped; logging in again");
                self.login()?
            }
        };
        let mut xfer: c_int = 0;
        let mut sense = [0u8; SENSE_CAP];
        let mut sense_len: c_int = 0;
        // SAFETY: ctx is a live context used by this thread only; cdb and buf are valid for their
        // lengths for the whole call (the shim waits for the command to finish or cancels it before
        // returning); sense holds SENSE_CAP bytes.
        let rc = unsafe {
            ffi::shim_cmd(
                ctx.as_ptr(),
                c_int::from(self.url.lun),
                cdb.as_ptr(),
                cdb.len() as c_int,
                dir,
                buf,
                buflen,
                millis(timeout),
                &mut xfer,
                sense.as_mut_ptr(),
                SENSE_CAP as c_int,
                &mut sense_len,
            )
        };
        match rc {
            0..=255 => {
                let sense = sense[..(sense_len.clamp(0, SENSE_CAP as c_int) as usize)].to_vec();
                Ok(Completion {
                    status: Status(rc as u8),
                    sense,
                    transferred: (xfer.max(0) as usize).min(len),
                })
            }
            ffi::SHIM_TIMEOUT => {
                self.drop_session();
                Err(TransportError::Timeout {
                    device: self.desc.clone(),
                    timeout,
                })
            }
            ffi::SHIM_POLL => {
                let e = std::io::Error::last_os_error();
                self.drop_session();
                Err(TransportError::Io {
                    device: self.desc.clone(),
                    source: e,
                })
            }
            _ => {
                // SAFETY: ctx is live; libiscsi returns a NUL-terminated string it owns, copied here
                // before the context goes away.
                let why = unsafe { CStr::from_ptr(ffi::shim_error(ctx.as_ptr())) }
                    .to_string_lossy()
                    .into_owned();
                self.drop_session();
                Err(other(format!(
                    "iSCSI command {:#04x} failed: {why}",
                    cdb[0]
                )))
            }
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}

impl Drop for IscsiDevice {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            // SAFETY: ctx came from shim_connect and is closed exactly once.
            unsafe { ffi::shim_close(ctx.as_ptr(), millis(LOGOUT_TIMEOUT)) };
            tracing::debug!(device = %self.desc, "iSCSI logout");
        }
    }
}

/// A timeout in whole milliseconds for C, at least 1 (zero would expire at once).
fn millis(d: Duration) -> c_int {
    c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_send() {
        fn send<T: Send>() {}
        send::<IscsiDevice>();
    }

    #[test]
    fn millis_clamps() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(3)), 3000);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), c_int::MAX);
    }

    #[test]
    fn bad_initiator_is_refused_before_any_network() {
        let url: IscsiUrl = "iscsi://127.0.0.1:1/iqn.x:y/0".parse().unwrap();
        let e = IscsiDevice::connect(&url, "bad name")
            .unwrap_err()
            .to_string();
        if supported() {
            assert!(e.contains("bad initiator name"), "{e}");
        } else {
            assert!(e.contains(NO_SUPPORT), "{e}");
        }
    }

    #[test]
    fn unsupported_build_says_what_to_do() {
        let url: IscsiUrl = "iscsi://127.0.0.1:1/iqn.x:y/0".parse().unwrap();
        let e = IscsiDevice::connect(&url, DEFAULT_INITIATOR)
            .unwrap_err()
            .to_string();
        if supported() {
            // Nothing listens on port 1: a clear login error, not a hang.
            assert!(e.contains("iSCSI login to 127.0.0.1:1"), "{e}");
        } else {
            assert!(e.contains("install libiscsi-dev and rebuild"), "{e}");
        }
    }
}
