//! Names and descriptions of signals and `si_code` values.

/// `SIGSEGV` for 11, `SIG42` for a number without a name.
pub fn name(sig: i32) -> String {
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
        return s.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        return format!("SIGRTMIN+{}", sig - min);
    }
    format!("SIG{sig}")
}

/// A few words on what the signal usually means.
pub fn describe(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "segmentation fault",
        libc::SIGABRT => "abort",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating-point exception",
        libc::SIGILL => "illegal instruction",
        libc::SIGKILL => "killed",
        libc::SIGTERM => "terminated",
        libc::SIGINT => "interrupted",
        libc::SIGHUP => "hangup",
        libc::SIGQUIT => "quit",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGSYS => "bad system call",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGUSR1 | libc::SIGUSR2 => "user-defined signal",
        _ => "signal",
    }
}

/// True for the signals a process raises on a fault of its own (a faulting
/// instruction), where the fault address and instruction pointer matter.
pub fn is_fault(sig: i32) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP)
}

/// Name of an `si_code` for a signal: `SEGV_MAPERR`, `SI_USER`, ...
pub fn si_code_name(sig: i32, code: i32) -> String {
    let generic = match code {
        0 => Some("SI_USER"),
        0x80 => Some("SI_KERNEL"),
        -1 => Some("SI_QUEUE"),
        -2 => Some("SI_TIMER"),
        -3 => Some("SI_MESGQ"),
        -4 => Some("SI_ASYNCIO"),
        -5 => Some("SI_SIGIO"),
        -6 => Some("SI_TKILL"),
        _ => None,
    };
    if let Some(g) = generic {
        return g.to_string();
    }
    let specific = match (sig, code) {
        (libc::SIGSEGV, 1) => "SEGV_MAPERR",
        (libc::SIGSEGV, 2) => "SEGV_ACCERR",
        (libc::SIGSEGV, 3) => "SEGV_BNDERR",
        (libc::SIGSEGV, 4) => "SEGV_PKUERR",
        (libc::SIGBUS, 1) => "BUS_ADRALN",
        (libc::SIGBUS, 2) => "BUS_ADRERR",
        (libc::SIGBUS, 3) => "BUS_OBJERR",
        (libc::SIGBUS, 4) => "BUS_MCEERR_AR",
        (libc::SIGBUS, 5) => "BUS_MCEERR_AO",
        (libc::SIGFPE, 1) => "FPE_INTDIV",
        (libc::SIGFPE, 2) => "FPE_INTOVF",
        (libc::SIGFPE, 3) => "FPE_FLTDIV",
        (libc::SIGFPE, 4) => "FPE_FLTOVF",
        (libc::SIGFPE, 5) => "FPE_FLTUND",
        (libc::SIGFPE, 6) => "FPE_FLTRES",
        (libc::SIGFPE, 7) => "FPE_FLTINV",
        (libc::SIGFPE, 8) => "FPE_FLTSUB",
        (libc::SIGILL, 1) => "ILL_ILLOPC",
        (libc::SIGILL, 2) => "ILL_ILLOPN",
        (libc::SIGILL, 3) => "ILL_ILLADR",
        (libc::SIGILL, 4) => "ILL_ILLTRP",
        (libc::SIGILL, 5) => "ILL_PRVOPC",
        (libc::SIGILL, 6) => "ILL_PRVREG",
        (libc::SIGILL, 7) => "ILL_COPROC",
        (libc::SIGILL, 8) => "ILL_BADSTK",
        (libc::SIGTRAP, 1) => "TRAP_BRKPT",
        (libc::SIGTRAP, 2) => "TRAP_TRACE",
        _ => return format!("{code}"),
    };
    specific.to_string()
}

/// True when the si_code says another process (or the process itself) sent
/// the signal with kill/tkill/sigqueue, so `si_pid` is meaningful.
pub fn is_sent(code: i32) -> bool {
    code <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(11), "SIGSEGV");
        assert_eq!(name(6), "SIGABRT");
        assert_eq!(name(libc::SIGRTMIN() + 5), "SIGRTMIN+5");
        assert_eq!(describe(11), "segmentation fault");
        assert_eq!(si_code_name(11, 1), "SEGV_MAPERR");
        assert_eq!(si_code_name(8, 1), "FPE_INTDIV");
        assert_eq!(si_code_name(11, 0), "SI_USER");
        assert_eq!(si_code_name(6, -6), "SI_TKILL");
    }
}
