//! Starting the command: resolving it on PATH, turning a bare `pytest`
//! into `<its python> -m pytest`, and fork/exec into a process group of its
//! own, optionally seized by ptrace before it execs.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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
        // SAFETY: read into a stack buffer from an fd we own.
        let n = unsafe { libc::read(self.err_pipe.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        (n == 4).then(|| std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))
    }

    /// Gives the terminal back to the wrapper's process group.
    pub fn restore_terminal(&self) {
        if self.took_terminal {
            // SAFETY: ignoring SIGTTOU around tcsetpgrp, as shells do.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpgrp());
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
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks and execs `cmd` in a new process group. With `traced`, the parent
/// seizes the child before it execs; when that is refused the child runs
/// untraced and the reason comes back in [`Spawned::Plain`].
pub fn spawn(cmd: &Command, traced: bool) -> Result<Spawned> {
    let program = cstr(cmd.program.as_os_str())?;
    let argv: Vec<CString> = cmd.argv.iter().map(|a| cstr(a)).collect::<Result<_>>()?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !cmd.env_remove.contains(k) && !cmd.env_set.iter().any(|(s, _)| s == k))
        .collect();
    env.extend(cmd.env_set.iter().cloned());
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).context("environment variable with a NUL byte")
        })
        .collect::<Result<_>>()?;
    let argv_ptrs: Vec<*const libc::c_char> =
        argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp_ptrs: Vec<*const libc::c_char> =
        envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();

    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    // SAFETY: plain libc queries.
    let take_terminal = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() };
    let parent_pid = nix::unistd::getpid();

    // SAFETY: the child only calls async-signal-safe functions before exec.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            libc::setpgid(0, 0);
            if take_terminal {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, old);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent_pid.as_raw() {
                libc::_exit(127);
            }
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGALRM] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            let mut b = [0u8; 1];
            while libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) < 0 {}
            libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(err_w.as_raw_fd(), errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127);
        },
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(err_w);
            // Mirror the child's setpgid so signals can go to the group at once.
            // SAFETY: setpgid on our own child.
            unsafe { libc::setpgid(child.as_raw(), child.as_raw()) };
            let refused = if traced {
                ptrace::seize(child, trace_options()).err().map(|e| format!("ptrace refused ({e})"))
            } else {
                None
            };
            // SAFETY: one byte to our own pipe.
            unsafe { libc::write(go_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            drop(go_w);
            let c = Child { pid: child, err_pipe: err_r, took_terminal: take_terminal, program: cmd.program.clone() };
            if !traced {
                // Untraced: block until exec succeeded (pipe closes) or failed.
                if let Some(e) = c.exec_error() {
                    reap(child);
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
    }
}

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
}
