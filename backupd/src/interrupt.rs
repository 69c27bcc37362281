//! Ctrl-C and SIGTERM for `backupd run` (the daemon has its own handling): the first signal
//! cancels the run in progress, which stops at its next file or block, publishes nothing, records
//! `cancelled` and still runs its post hook (an application frozen by the pre hook is thawed);
//! a second signal ends the process at once.
//!
//! The signals are blocked in the calling thread, and so in every thread started after it (the
//! copy's thread pool, the progress bar), and received by one thread with sigwait(2): no async
//! signal handler runs arbitrary code. A spawned process would inherit that mask (std does not
//! reset it), so hooks and pg_dump are started through [`unblock_signals`] and stay stoppable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::progress::Progress;

/// Makes `cmd` start with no signal blocked, whatever the spawning thread blocks: a hook or pg_dump
/// that inherited our blocked SIGINT/SIGTERM could not be stopped by them.
pub fn unblock_signals(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls sigemptyset and sigprocmask, both
    // async-signal-safe, on a set on its own stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[derive(Clone, Default)]
pub struct Interrupts {
    stopped: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Arc<Progress>>>>,
}

impl Interrupts {
    /// Call before any other thread is started.
    pub fn install() -> std::io::Result<Interrupts> {
        let me = Interrupts::default();
        // SAFETY: sigset manipulation on a local set, then pthread_sigmask on this thread.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            set
        };
        let watcher = me.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || watcher.wait_for_signals(set))?;
        Ok(me)
    }

    fn wait_for_signals(&self, set: libc::sigset_t) {
        loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid, initialised signal set; `sig` is written by sigwait.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let name = if sig == libc::SIGINT {
                "interrupt"
            } else {
                "SIGTERM"
            };
            if self.stopped.swap(true, Ordering::SeqCst) {
                eprintln!("{name} again: quitting now; the run will show as interrupted");
                std::process::exit(128 + sig);
            }
            eprintln!("{name}: cancelling the run (nothing is published; again to quit at once)");
            if let Some(p) = self.current.lock().expect("not poisoned").as_ref() {
                p.cancel();
            }
        }
    }

    /// The run whose progress a signal cancels; cancelled at once if a signal came already.
    pub fn watch(&self, p: Arc<Progress>) {
        if self.stopped() {
            p.cancel();
        }
        *self.current.lock().expect("not poisoned") = Some(p);
    }

    /// True once a signal arrived: start no further runs.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}
