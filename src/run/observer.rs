//! The observer of one run: each process end goes through attribution, gets
//! its forensics (stacks, OOM hint, timeout), is appended to the crash log at
//! once, and is left for the xdist controller; the watchdog ticks here.

use std::path::Path;
use std::time::Duration;

use crate::attribute::{self, Attribution};
use crate::forensics::{self, OomWatch};
use crate::model::{Crash, Death, Worker};
use crate::record::{self, CrashRecord};
use crate::reporter::{Event, Reporters};
use crate::supervise::{Follow, Observer, ProcessEnd};
use crate::watchdog::Watchdog;

/// Collects the records of one run.
pub(super) struct RunObserver<'a> {
    ctx: attribute::Context,
    crash_log: Option<&'a Path>,
    out: &'a Reporters,
    interrupted: Option<i32>,
    /// The run's crashes, in order.
    pub crashes: Vec<Crash>,
    /// Problems that did not stop the run.
    pub warnings: Vec<String>,
    /// True when a record could not be appended to the crash log.
    pub io_error: bool,
    /// The run's timeouts.
    pub watchdog: Watchdog,
    oom: OomWatch,
    /// Per pid: whether that pytest process runs tests itself.
    runs_tests: std::collections::HashMap<i32, bool>,
    /// GPU slots, when the run has them.
    gpu: Option<crate::gpu::plan::Plan>,
}

impl<'a> RunObserver<'a> {
    /// An observer for one run.
    pub fn new(ctx: attribute::Context, crash_log: Option<&'a Path>, out: &'a Reporters, watchdog: Watchdog) -> Self {
        RunObserver {
            ctx,
            crash_log,
            out,
            interrupted: None,
            crashes: Vec::new(),
            warnings: Vec::new(),
            io_error: false,
            watchdog,
            oom: OomWatch::new(),
            runs_tests: std::collections::HashMap::new(),
            gpu: None,
        }
    }

    /// The same observer, for a run with GPU slots: a dead worker's record
    /// names its slot's GPU, and its death is noted for the slot's next
    /// worker (release wait, quarantine).
    pub fn with_gpu(mut self, gpu: Option<crate::gpu::plan::Plan>) -> Self {
        self.gpu = gpu;
        self
    }

    /// Notes a worker's death on its GPU slot, names that GPU in the crash
    /// and says so when the GPU is quarantined.
    fn note_gpu_death(&mut self, crash: &mut Crash) {
        let Some(plan) = &self.gpu else { return };
        if crash.worker == Worker::Main {
            return;
        }
        let Some(noted) = crate::gpu::slots::note_death(&self.ctx.state_dir, plan, crash.pid) else { return };
        crash.gpu_id = noted.gpu.clone();
        if noted.quarantined {
            let w = format!(
                "GPU {} quarantined after {} worker deaths in a row (while other GPUs are healthy): its slots are not taken any more",
                noted.gpu, noted.in_a_row
            );
            self.out.warning(w.clone());
            self.warnings.push(w);
        }
    }

    /// Adds what forensics know to a fresh crash.
    fn enrich(&mut self, crash: &mut Crash, end: &ProcessEnd) {
        crash.traceback = forensics::read_traceback(&self.ctx.state_dir, self.ctx.run, end.pid);
        if crash.death == Death::Unknown {
            // Without ptrace the wait status may be unknown: faulthandler's
            // dump still names the fatal signal.
            if let Some(signal) = crash.traceback.as_deref().and_then(forensics::signal_from_traceback) {
                crash.death = Death::Signal { signal, core_dumped: false, detail: None };
            }
        }
        if let Some(e) = self.watchdog.expiry_of(end.pid) {
            let end = Box::new(std::mem::replace(&mut crash.death, Death::Unknown));
            crash.death = Death::Timeout { limit: Some(e.limit), scope: Some(e.scope), end };
        } else if crash.death.signal() == Some(libc::SIGKILL) && self.oom.fired(end.pid) {
            crash.oom_suspected = true;
        }
    }
}

impl RunObserver<'_> {
    /// Records the device error this process's journal reports (once per
    /// process): the test that poisoned it.
    pub fn device_error(&mut self, journal: &crate::journal::ProcessJournal) {
        let known = |c: &Crash| c.pid == journal.pid && c.death.kind().test_finished();
        if self.crashes.iter().any(known) {
            return;
        }
        if let Some(crash) = attribute::device_error(&self.ctx, journal) {
            let rec = CrashRecord::from(&crash);
            self.record(crash, rec);
        }
    }

    /// Appends a crash's record to the crash log at once, tells the
    /// reporters, and keeps the crash.
    fn record(&mut self, crash: Crash, rec: CrashRecord) {
        if let Some(log) = self.crash_log {
            if let Err(e) = record::append_records(log, std::slice::from_ref(&rec)) {
                let w = format!("{e:#}");
                self.out.error(w.clone());
                self.warnings.push(w);
                self.io_error = true;
            }
        }
        // The terminal echoes the stacks faulthandler wrote into our file.
        self.out.emit(Event::TestCrashed(rec));
        self.crashes.push(crash);
    }
}

impl Observer for RunObserver<'_> {
    fn process_ended(&mut self, end: &ProcessEnd) {
        let Attribution { crash, warnings } = attribute::attribute(&self.ctx, end, self.interrupted);
        for w in warnings {
            self.out.warning(w.clone());
            self.warnings.push(w);
        }
        if let Some(j) = crate::journal::ProcessJournal::read_head_and_tail(&self.ctx.state_dir, self.ctx.run, end.pid)
        {
            self.device_error(&j);
        }
        let Some(mut crash) = crash else { return };
        self.enrich(&mut crash, end);
        self.note_gpu_death(&mut crash);
        let rec = CrashRecord::from(&crash);
        if crash.worker != Worker::Main {
            forensics::write_crashinfo(&self.ctx.state_dir, self.ctx.run, &rec);
        }
        self.record(crash, rec);
    }

    /// A pytest process that runs tests (serial, or an xdist worker) starts
    /// nothing but tests' own subprocesses: let go of them at once, so they
    /// cost no stops and can be traced by a test's debugger. An xdist
    /// controller's children are followed up to their exec (its workers
    /// are Python). Anything else (before the plugin loaded, or a process
    /// that is not pytest) is followed fully.
    fn follow(&mut self, pid: i32) -> Follow {
        if let Some(known) = self.runs_tests.get(&pid) {
            return if *known { Follow::None } else { Follow::UntilExec };
        }
        match crate::journal::read_start(&self.ctx.state_dir, self.ctx.run, pid) {
            Some(crate::journal::Event::Start { xdist_controller, fork_server, .. }) => {
                if fork_server && !crate::journal::fork_declined(&self.ctx.state_dir, self.ctx.run, pid) {
                    // Its children are the pytest processes that run the
                    // tests (not cached: it may still decline to serve).
                    return Follow::UntilExec;
                }
                self.runs_tests.insert(pid, !xdist_controller);
                if xdist_controller {
                    Follow::UntilExec
                } else {
                    Follow::None
                }
            }
            _ => Follow::All,
        }
    }

    fn watched_pids(&mut self) -> Vec<i32> {
        // Journaled processes, and those that only opened their faulthandler
        // file so far (they may die at startup, before any journal).
        let prefix = format!("r{}-", self.ctx.run);
        let pids_in = |dir: std::path::PathBuf, suffix: &str| -> Vec<i32> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .strip_prefix(&prefix)
                                .and_then(|r| r.strip_suffix(suffix))
                                .and_then(|p| p.parse().ok())
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut pids = pids_in(crate::journal::journal_dir(&self.ctx.state_dir), ".jsonl");
        pids.extend(pids_in(self.ctx.state_dir.join("faulthandler"), ".txt"));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn interrupted(&mut self, signal: i32) {
        self.interrupted = Some(signal);
    }

    fn started(&mut self, root: i32) {
        self.watchdog.set_root(root);
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.watchdog.interval()
    }

    fn tick(&mut self) {
        if self.watchdog.active() {
            let pids = self.watched_pids();
            self.watchdog.tick(&pids);
        }
    }
}
