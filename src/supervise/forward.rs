//! The wrapper's own signal handling: SIGINT, SIGTERM and SIGHUP are noted
//! (and then forwarded to pytest's process group by the supervisor);
//! SIGALRM only interrupts a blocking wait so periodic work can run.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static PENDING: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

extern "C" fn note(sig: libc::c_int) {
    if sig != libc::SIGALRM {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// Installs the handlers (once). No `SA_RESTART`, so `waitpid` returns
/// `EINTR` and the supervisor gets to act.
pub fn install() {
    INSTALL.call_once(|| {
        let action = SigAction::new(SigHandler::Handler(note), SaFlags::empty(), SigSet::empty());
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGALRM] {
            // SAFETY: the handler only stores to an atomic.
            unsafe {
                let _ = sigaction(sig, &action);
            }
        }
    });
}

/// Takes the pending forwarded signal, if one arrived.
pub fn take_pending() -> Option<i32> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Arms a repeating SIGALRM every `every` (or disarms it with `None`).
pub fn set_ticker(every: Option<Duration>) {
    let d = every.unwrap_or_default();
    let tv = libc::timeval { tv_sec: d.as_secs() as libc::time_t, tv_usec: d.subsec_micros() as libc::suseconds_t };
    let timer = libc::itimerval { it_interval: tv, it_value: tv };
    // SAFETY: plain setitimer with a valid struct.
    unsafe {
        libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut());
    }
}
