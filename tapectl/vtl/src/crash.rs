//! Crash points, for tests of the on-disk layout: every change the library makes to a cartridge
//! directory is a sequence of syscalls, and after each one that changes the directory the code calls
//! [`step`]. Armed with [`crash_at_step`], the process kills itself with SIGKILL at the chosen step,
//! exactly as `kill -9` at that instant would (no destructors, no flushing, other threads stopped), so a
//! test can crash a writer between any two of its syscalls and look at what it left.

use std::sync::atomic::{AtomicU64, Ordering};

static ARMED_AT: AtomicU64 = AtomicU64::new(0);
static PASSED: AtomicU64 = AtomicU64::new(0);

/// Arms a crash: the process sends itself SIGKILL at the `n`th (1-based) step from now that changes a
/// cartridge directory. `None` disarms. Both restart the count of [`steps_passed`]. Only for crash
/// tests: a process armed this way dies without cleaning up.
pub fn crash_at_step(n: Option<u64>) {
    ARMED_AT.store(0, Ordering::SeqCst);
    PASSED.store(0, Ordering::SeqCst);
    ARMED_AT.store(n.unwrap_or(0), Ordering::SeqCst);
}

/// How many directory-changing steps this process passed since the last [`crash_at_step`] (or since
/// it started).
pub fn steps_passed() -> u64 {
    PASSED.load(Ordering::SeqCst)
}

/// A point between two syscalls that changed a cartridge directory.
pub(crate) fn step() {
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if ARMED_AT.load(Ordering::Relaxed) == n {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so this does not return
        // normally. Parking covers the instant before the kernel stops this thread.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        loop {
            std::thread::park();
        }
    }
}
