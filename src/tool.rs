//! Running a helper tool (`nvidia-smi`, a Python that renders a page) with
//! its standard output captured and a time limit: the one place that polls
//! a child with a deadline and kills it when the deadline passes.

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with stdin and stderr closed and stdout captured; kills it
/// (and reaps it) when it runs past `limit`. Returns its exit status and
/// everything it wrote, or `None` when it could not start, ran too long or
/// its output could not be read.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Option<(ExitStatus, Vec<u8>)> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    // Read on a thread so a tool that writes more than a pipe holds never
    // blocks on us while we wait for it.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    Some((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_hangs_is_cut_off_and_one_that_ends_is_read() {
        let t = Instant::now();
        assert!(output_within(Command::new("sleep").arg("30"), Duration::from_millis(200)).is_none());
        assert!(t.elapsed() < Duration::from_secs(10));
        let (status, out) = output_within(Command::new("echo").arg("hi"), Duration::from_secs(10)).unwrap();
        assert!(status.success());
        assert_eq!(out, b"hi\n");
        assert!(output_within(&mut Command::new("/nonexistent/tool"), Duration::from_secs(1)).is_none());
    }
}
