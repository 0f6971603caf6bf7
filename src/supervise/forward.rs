//! The wrapper's own signal handling: SIGINT, SIGTERM and SIGHUP are noted
//! (the supervisor forwards the first to pytest's process group and kills
//! the group with SIGKILL at the second, for a pytest that ignores them);
//! SIGALRM only interrupts a blocking wait so periodic work can run.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The first stop signal received (0 before any).
static FIRST: AtomicI32 = AtomicI32::new(0);
/// How many stop signals arrived in all.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// How many of them the supervisor has acted on.
static TAKEN: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

extern "C" fn note(sig: libc::c_int) {
    if sig != libc::SIGALRM {
        let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        RECEIVED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Installs the handlers (once). No `SA_RESTART`, so `waitpid` returns
/// `EINTR` and the supervisor gets to act.
pub fn install() {
    INSTALL.call_once(|| {
        let action = SigAction::new(SigHandler::Handler(note), SaFlags::empty(), SigSet::empty());
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGALRM] {
            // SAFETY: `note` is async-signal-safe (it only touches atomics),
            // and replacing these dispositions breaks no other handler: the
            // wrapper installs none of its own for them.
            unsafe {
                let _ = sigaction(sig, &action);
            }
        }
    });
}

/// What the supervisor must do about the signals the wrapper got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The first one: pass this signal to pytest's process group.
    Forward(i32),
    /// A second one: pytest did not stop; kill its process group.
    Kill,
}

/// The action due since the last call, if a signal arrived. Two signals
/// arriving between calls count as two: the group is killed at once.
pub fn take_pending() -> Option<Interrupt> {
    let received = RECEIVED.load(Ordering::SeqCst);
    let taken = TAKEN.swap(received, Ordering::SeqCst);
    if received == taken {
        return None;
    }
    if taken == 0 && received == 1 {
        return Some(Interrupt::Forward(FIRST.load(Ordering::SeqCst)));
    }
    Some(Interrupt::Kill)
}

/// The first signal the wrapper got, if any: what it exits with (128+N).
pub fn first_signal() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Arms a repeating SIGALRM every `every` (or disarms it with `None`).
pub fn set_ticker(every: Option<Duration>) {
    let d = every.unwrap_or_default();
    let tv = libc::timeval { tv_sec: d.as_secs() as libc::time_t, tv_usec: d.subsec_micros() as libc::suseconds_t };
    let timer = libc::itimerval { it_interval: tv, it_value: tv };
    // SAFETY: setitimer reads the valid, initialised `timer` and writes
    // nothing (null old-value pointer); SIGALRM's handler is installed.
    unsafe {
        libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut());
    }
}
