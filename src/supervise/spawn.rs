//! Starting the command: resolving it on PATH, turning a bare `pytest`
//! into `<its python> -m pytest`, and fork/exec into a process group of its
//! own, optionally seized by ptrace before it execs.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::ptrace;
use nix::unistd::{fork, ForkResult, Pid};

/// A command ready to start.
#[derive(Debug, Clone)]
pub struct Command {
    /// The program, resolved to a path.
    pub program: PathBuf,
    /// argv, argv[0] included.
    pub argv: Vec<OsString>,
    /// Variables to set in the child.
    pub env_set: Vec<(OsString, OsString)>,
    /// Variables to remove in the child.
    pub env_remove: Vec<OsString>,
}

impl Command {
    /// Resolves `argv` (a bare `pytest` becomes `<python> -m pytest`, with
    /// the interpreter the `pytest` on PATH belongs to).
    pub fn resolve(argv: &[OsString]) -> Result<Self> {
        let Some(first) = argv.first() else { bail!("no command given: use pytest-abort-wrap -- pytest ARGS...") };
        let program = locate(first)?;
        let mut full: Vec<OsString> = argv.to_vec();
        if first == "pytest" {
            if let Some(python) = python_of_script(&program) {
                full = vec![python.clone().into_os_string(), "-m".into(), "pytest".into()];
                full.extend(argv[1..].iter().cloned());
                return Ok(Command { program: python, argv: full, env_set: vec![], env_remove: vec![] });
            }
        }
        full[0] = first.clone();
        Ok(Command { program, argv: full, env_set: vec![], env_remove: vec![] })
    }

    /// A short display of the command line.
    pub fn display(&self) -> String {
        self.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Finds a program the way `execvp` would, and says why not: not found, or
/// found (or hidden behind a folder it may not search) but not executable.
pub fn locate(name: &OsStr) -> Result<PathBuf, crate::error::Error> {
    use crate::error::Error;
    let denied = |p: &Path| -> Option<std::io::Error> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => None,
            Ok(_) => Some(std::io::Error::from_raw_os_error(libc::EACCES)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(e),
        }
    };
    if let Some(p) = find_program(name) {
        return Ok(p);
    }
    let candidates: Vec<PathBuf> = if name.as_bytes().contains(&b'/') {
        vec![PathBuf::from(name)]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path).map(|d| d.join(name)).collect()
    };
    match candidates.iter().find_map(|c| denied(c).map(|e| (c, e))) {
        Some((path, source)) => Err(Error::CannotExecute { path: path.clone(), source }),
        None => Err(Error::CommandNotFound { name: name.to_string_lossy().into_owned() }),
    }
}

/// Finds a program the way `execvp` would.
pub fn find_program(name: &OsStr) -> Option<PathBuf> {
    let p = Path::new(name);
    if name.as_bytes().contains(&b'/') {
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|c| is_executable(c))
}

/// The interpreter a Python console script runs with, from its shebang.
fn python_of_script(script: &Path) -> Option<PathBuf> {
    let head = std::fs::read(script).ok()?;
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line.strip_prefix(b"#!")?).ok()?.trim();
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let interp = if first.ends_with("/env") { words.find(|w| !w.starts_with('-'))? } else { first };
    if !interp.rsplit('/').next()?.starts_with("python") {
        return None;
    }
    find_program(OsStr::new(interp))
}

/// A started child.
#[derive(Debug)]
pub struct Child {
    /// pid (and process-group id).
    pub pid: Pid,
    /// Read end of the exec-error pipe (close-on-exec in the child).
    err_pipe: OwnedFd,
    /// Whether the child was made the terminal's foreground group.
    pub took_terminal: bool,
    /// The program it executes.
    pub program: PathBuf,
}

impl Child {
    /// The error of a failed exec, if the child reported one.
    pub fn exec_error(&self) -> Option<std::io::Error> {
        let mut buf = [0u8; 4];
        let n = nix::unistd::read(self.err_pipe.as_raw_fd(), &mut buf);
        (n == Ok(4)).then(|| std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))
    }

    /// Gives the terminal back to the wrapper's process group.
    pub fn restore_terminal(&self) {
        if self.took_terminal {
            // A background group calling tcsetpgrp gets SIGTTOU: ignore it
            // for the call, as shells do.
            // SAFETY: SIG_IGN and the disposition saved here are valid
            // handlers; the wrapper has no SIGTTOU handler of its own that
            // could run in between, and the old one is put back at once.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp());
                libc::signal(libc::SIGTTOU, old);
            }
        }
    }
}

/// How the child was started.
#[derive(Debug)]
pub enum Spawned {
    /// Seized by ptrace before exec.
    Traced(Child),
    /// Not traced; with the reason when tracing was asked for and refused.
    Plain(Child, String),
}

/// The ptrace options: follow every descendant, see exec and exit, and kill
/// every tracee if the wrapper dies.
pub fn trace_options() -> ptrace::Options {
    ptrace::Options::PTRACE_O_TRACEFORK
        | ptrace::Options::PTRACE_O_TRACEVFORK
        | ptrace::Options::PTRACE_O_TRACECLONE
        | ptrace::Options::PTRACE_O_TRACEEXEC
        | ptrace::Options::PTRACE_O_TRACEEXIT
        | ptrace::Options::PTRACE_O_EXITKILL
}

fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("{:?}: contains a NUL byte", s))
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")
}

/// `KEY=value` strings: the wrapper's environment minus `env_remove` and
/// the overridden keys, plus `env_set`.
fn environment(cmd: &Command) -> Result<Vec<CString>> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !cmd.env_remove.contains(k) && !cmd.env_set.iter().any(|(s, _)| s == k))
        .collect();
    env.extend(cmd.env_set.iter().cloned());
    env.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).context("environment variable with a NUL byte")
        })
        .collect()
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// Everything the child needs between fork and exec, prepared before the
/// fork so the child allocates nothing.
struct ExecPlan {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    take_terminal: bool,
    parent: Pid,
    go: OwnedFd,
    err: OwnedFd,
}

/// The child side of the fork: own process group (and the terminal when
/// the wrapper had it), die with the wrapper, default signals, wait for the
/// parent's go (it seizes us first), then exec; a failed exec sends errno
/// back through the error pipe.
///
/// # Safety
/// Call only in the child of a fork: it calls only async-signal-safe
/// functions and never returns. The pointers in `plan` must point into
/// strings that outlive the call (they do: the parent's copies, inherited).
unsafe fn exec_child(plan: &ExecPlan) -> ! {
    libc::setpgid(0, 0);
    if plan.take_terminal {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, libc::getpid());
        libc::signal(libc::SIGTTOU, old);
    }
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != plan.parent.as_raw() {
        libc::_exit(127);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGALRM] {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    let mut b = [0u8; 1];
    while libc::read(plan.go.as_raw_fd(), b.as_mut_ptr().cast(), 1) < 0 {}
    libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
    let errno = *libc::__errno_location();
    libc::write(plan.err.as_raw_fd(), errno.to_ne_bytes().as_ptr().cast(), 4);
    libc::_exit(127);
}

/// Forks and execs `cmd` in a new process group. With `traced`, the parent
/// seizes the child before it execs; when that is refused the child runs
/// untraced and the reason comes back in [`Spawned::Plain`].
pub fn spawn(cmd: &Command, traced: bool) -> Result<Spawned> {
    let program = cstr(cmd.program.as_os_str())?;
    let argv: Vec<CString> = cmd.argv.iter().map(|a| cstr(a)).collect::<Result<_>>()?;
    let envp = environment(cmd)?;
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let stdin = std::io::stdin();
    let take_terminal = nix::unistd::isatty(0).unwrap_or(false)
        && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|g| g == nix::unistd::getpgrp());
    let plan = ExecPlan {
        program,
        argv: pointers(&argv),
        envp: pointers(&envp),
        take_terminal,
        parent: nix::unistd::getpid(),
        go: go_r,
        err: err_w,
    };
    // SAFETY: the child runs only `exec_child` (async-signal-safe calls on
    // memory prepared before the fork) and never returns into Rust code.
    match unsafe { fork() }.context("fork")? {
        // SAFETY: this is the child of the fork, as exec_child requires.
        ForkResult::Child => unsafe { exec_child(&plan) },
        ForkResult::Parent { child } => {
            drop(plan);
            let c = Child { pid: child, err_pipe: err_r, took_terminal: take_terminal, program: cmd.program.clone() };
            start(c, cmd, traced, go_w)
        }
    }
}

/// The parent side: mirrors the child's process group, seizes it when
/// asked, then lets it exec.
fn start(c: Child, cmd: &Command, traced: bool, go: OwnedFd) -> Result<Spawned> {
    // Mirror the child's setpgid so signals can go to the group at once
    // (EACCES once it has exec'd is fine: it did it itself).
    let _ = nix::unistd::setpgid(c.pid, c.pid);
    let refused = if traced {
        ptrace::seize(c.pid, trace_options()).err().map(|e| format!("ptrace refused ({e})"))
    } else {
        None
    };
    let _ = nix::unistd::write(&go, b"g");
    drop(go);
    if !traced {
        // Untraced: block until exec succeeded (pipe closes) or failed.
        if let Some(e) = c.exec_error() {
            reap(c.pid);
            c.restore_terminal();
            return Err(crate::error::Error::exec_failed(&cmd.program, e).into());
        }
        return Ok(Spawned::Plain(c, String::new()));
    }
    Ok(match refused {
        None => Spawned::Traced(c),
        Some(why) => Spawned::Plain(c, why),
    })
}

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
}
