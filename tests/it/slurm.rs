//! Shards on a real Slurm (issue 14), started by the test itself: munged,
//! slurmctld and slurmd on this machine with a config in a temp folder,
//! `examples/slurm/submit.sh` submitting the array of 3 shards and the merge
//! job that waits for them (`--dependency=afterany`), and the merged result
//! checked against the unsharded run. Debian's `slurm-wlm` and `munge` must
//! be installed (`.ci/run` does it); when the daemons cannot start, the test
//! fails with the reason.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::shard::{crash_suite, normalised_with, CRASHED};
use crate::util::python;

/// The daemons of a one-node cluster, stopped by pid when dropped (also
/// when the test fails).
struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<(&'static str, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in self.daemons.iter_mut().rev() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn which(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: the Slurm test needs Debian's slurm-wlm and munge (.ci/run installs them with apt-get)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    format!("--- {} ---\n{}", path.display(), lines[lines.len().saturating_sub(15)..].join("\n"))
}

impl Cluster {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn conf(&self) -> PathBuf {
        self.path().join("slurm.conf")
    }

    fn logs(&self) -> String {
        ["munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"]
            .iter()
            .map(|f| tail(&self.path().join(f)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let out = std::fs::File::create(self.path().join(format!("{name}.out"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.push((name, child));
    }

    /// Starts munged, slurmctld and slurmd, and waits for the node to be idle.
    fn start() -> Cluster {
        let (munged, slurmctld, slurmd) = (which("munged"), which("slurmctld"), which("slurmd"));
        which("sbatch");
        let mut c =
            Cluster { dir: tempfile::Builder::new().prefix("pa-slurm-").tempdir().unwrap(), daemons: Vec::new() };
        let t = c.path().to_path_buf();
        let key: Vec<u8> = (0..1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(t.join("munge.key"), key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.join("munge.key"), std::fs::Permissions::from_mode(0o400)).unwrap();
        for d in ["state", "spool"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
        let cpus = String::from_utf8_lossy(&Command::new(&slurmd).arg("-C").output().unwrap().stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix("CPUs=").map(String::from))
            .unwrap_or_else(|| "1".into());
        let t = t.display();
        let conf = format!(
            "ClusterName=pa\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\nAuthInfo=socket={t}/munge.sock\nCredType=cred/munge\n\
             StateSaveLocation={t}/state\nSlurmdSpoolDir={t}/spool\nSlurmctldPidFile={t}/slurmctld.pid\nSlurmdPidFile={t}/slurmd.pid\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             ReturnToService=2\nMpiDefault=none\nSlurmctldLogFile={t}/slurmctld.log\nSlurmdLogFile={t}/slurmd.log\n\
             JobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n\
             NodeName=pa-node NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=500 State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            free_port(),
            free_port(),
        );
        std::fs::write(c.conf(), conf).unwrap();
        c.spawn(
            "munged",
            Command::new(munged).args(["-F", "--force"]).args([
                format!("--key-file={t}/munge.key"),
                format!("--socket={t}/munge.sock"),
                format!("--pid-file={t}/munged.pid"),
                format!("--log-file={t}/munged.log"),
                format!("--seed-file={t}/munged.seed"),
            ]),
        );
        c.wait_for("munged's socket", Duration::from_secs(20), |c| c.path().join("munge.sock").exists());
        let conf = c.conf();
        c.spawn("slurmctld", Command::new(slurmctld).args(["-D", "-i", "-f"]).arg(&conf));
        c.spawn("slurmd", Command::new(slurmd).args(["-D", "-N", "pa-node", "-f"]).arg(&conf));
        c.wait_for("the node to be idle", Duration::from_secs(90), |c| {
            let out = c.client("sinfo").args(["-h", "-N", "-o", "%T"]).output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        c
    }

    /// Polls `ready` until true; fails with the daemons' logs after `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, ready: impl Fn(&Cluster) -> bool) {
        let start = Instant::now();
        loop {
            if ready(self) {
                return;
            }
            let exited = self.daemons.iter_mut().find_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some(format!("{name} exited ({status})")),
                _ => None,
            });
            if let Some(how) = exited {
                panic!("the Slurm daemons could not start: {how} waiting for {what}\n{}", self.logs());
            }
            if start.elapsed() > limit {
                panic!("the Slurm daemons could not start: no {what} after {limit:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A Slurm client command talking to this cluster.
    fn client(&self, name: &str) -> Command {
        let mut cmd = Command::new(which(name));
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }
}

#[test]
fn slurm_array_of_shards_and_dependent_merge_equal_the_unsharded_run() {
    let s = crash_suite();
    let full = s.path().join("full");
    let unsharded = s.wrap(
        &[
            "--json-report",
            &format!("{}/report.json", full.display()),
            "--junit-xml",
            &format!("{}/junit.xml", full.display()),
        ],
        &[],
    );
    assert_eq!(unsharded.code(), 1, "{}", unsharded.dump());

    let mut cluster = Cluster::start();
    let out = s.path().join("slurm-out");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut submit = Command::new("bash");
    submit.arg(repo.join("examples/slurm/submit.sh")).args(["-p", "no:cacheprovider"]);
    submit
        .env("SLURM_CONF", cluster.conf())
        .env("SHARDS", "3")
        .env("OUT", &out)
        .env("WRAP", env!("CARGO_BIN_EXE_pytest-abort-wrap"))
        .env("ABORT", env!("CARGO_BIN_EXE_pytest-abort"))
        .env("PYTHON", python());
    let r = s.run_cmd(submit);
    assert_eq!(r.code(), 0, "sbatch failed\n{}\n{}", r.dump(), cluster.logs());
    let ids: Vec<String> = r.stdout().split_whitespace().map(String::from).collect();
    assert_eq!(ids.len(), 2, "{}", r.dump());
    let jobs = ids.join(",");
    cluster.wait_for("end of the array and merge jobs", Duration::from_secs(300), |c| {
        let q = c.client("squeue").args(["-h", "-j", &jobs, "-o", "%i %T"]).output();
        q.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim().is_empty())
    });
    let merge_log = tail(&s.path().join(format!("pytest-merge-{}.out", ids[1])));
    let shard_logs: String =
        (1..=3).map(|k| tail(&s.path().join(format!("pytest-shard-{}_{k}.out", ids[0])))).collect();
    let merged = out.join("merged");
    assert!(merged.join("summary.json").is_file(), "no merged summary\n{merge_log}\n{shard_logs}\n{}", cluster.logs());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("summary.json")).unwrap()).unwrap();
    let mut shards: Vec<String> =
        summary["shards"].as_array().unwrap().iter().map(|v| v["shard"].as_str().unwrap().to_string()).collect();
    shards.sort();
    assert_eq!(shards, ["1/3", "2/3", "3/3"], "{summary}");
    assert_eq!(summary["missing"], serde_json::json!([]), "{summary}");
    assert_eq!((summary["counts"]["selected"].as_u64(), summary["counts"]["crashed"].as_u64()), (Some(35), Some(3)));
    assert_eq!(summary["exit_status"], 1, "crashes make the merge exit 1\n{merge_log}");
    for d in (1..=3).map(|k| out.join(format!("shard-{k}/summary.json"))) {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&d).unwrap()).unwrap();
        assert!(v["shard_source"].as_str().unwrap().contains("SLURM_ARRAY_TASK_ID"), "{v}");
    }
    for (kind, file) in [("json", "report.json"), ("junit", "junit.xml")] {
        let want = normalised_with(kind, &full.join(file), CRASHED);
        let got = normalised_with(kind, &merged.join(file), CRASHED);
        assert_eq!(got, want, "{kind}: the Slurm shards merged differ from the unsharded run\n{merge_log}");
    }
}
