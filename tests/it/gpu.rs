//! GPU slots (`--gpus`) on this CPU-only machine: real pytest with real
//! xdist workers; what each worker saw is written by the suite's conftest
//! and test modules at import (module level), before any test runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{python, venv_bin, Run, Suite};

/// The variables a caller may set; every test starts without them.
const GPU_VARS: [&str; 7] = [
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "PYTEST_ABORT_GPUS",
    "PYTEST_ABORT_GPU",
    "PYTEST_ABORT_GPU_SLOT",
];

/// Each process notes what it sees as the conftest and each test module
/// import: one JSON line in `seen.jsonl`.
const NOTING_CONFTEST: &str = r#"
import json, os, time

def note(where):
    keys = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
            "PYTEST_ABORT_GPU", "PYTEST_ABORT_GPU_SLOT", "PYTEST_XDIST_WORKER")
    line = dict({k: os.environ.get(k) for k in keys}, where=where, pid=os.getpid(), t=time.time())
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")

note("conftest")
"#;

/// A test module that notes what it sees at import, with `n` short tests.
fn module(n: usize, extra: &str) -> String {
    let mut s = String::from("import time\nfrom conftest import note\nnote(__name__)\n");
    s.push_str(extra);
    for i in 0..n {
        s.push_str(&format!("\ndef test_{i}():\n    time.sleep(0.05)\n"));
    }
    s
}

fn suite() -> Suite {
    let s = Suite::new();
    s.write("conftest.py", NOTING_CONFTEST);
    s
}

/// `pytest-abort-wrap WRAP_ARGS -- python -m pytest -q PYTEST_ARGS` without
/// the caller's GPU variables, plus `env`.
fn wrap(s: &Suite, env: &[(&str, &str)], wrap_args: &[&str], pytest_args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(wrap_args).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q"]).args(pytest_args);
    for v in GPU_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    s.run_cmd(cmd)
}

/// The lines of `seen.jsonl`.
fn seen(s: &Suite) -> Vec<Value> {
    let text = std::fs::read_to_string(s.path().join("seen.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Per worker pid: the value of `var` at every import it noted (conftest
/// and test modules), which must all agree.
fn per_worker(lines: &[Value], var: &str) -> BTreeMap<i64, Option<String>> {
    let mut out: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["PYTEST_XDIST_WORKER"].is_string()) {
        let pid = l["pid"].as_i64().unwrap();
        let v = l[var].as_str().map(String::from);
        if let Some(old) = out.insert(pid, v.clone()) {
            assert_eq!(old, v, "worker {pid} saw {var} change between imports: {lines:#?}");
        }
    }
    out
}

fn set(values: impl IntoIterator<Item = Option<String>>) -> BTreeSet<String> {
    values.into_iter().map(|v| v.unwrap_or_else(|| "<unset>".into())).collect()
}

#[test]
fn four_workers_each_see_their_own_gpu_before_any_module_imports() {
    let s = suite();
    for f in ["test_a.py", "test_b.py", "test_c.py", "test_d.py"] {
        s.write(f, &module(3, ""));
    }
    let r = wrap(&s, &[], &["--gpus", "0,1,2,3"], &[]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let lines = seen(&s);
    let cuda = per_worker(&lines, "CUDA_VISIBLE_DEVICES");
    // No -n given: the wrapper asked for 4 workers, one per GPU.
    assert_eq!(cuda.len(), 4, "{lines:#?}");
    assert_eq!(set(cuda.values().cloned()), set(["0", "1", "2", "3"].map(|g| Some(g.into()))), "{lines:#?}");
    // Every worker noted the conftest and the four modules, all with its GPU.
    for pid in cuda.keys() {
        let n = lines.iter().filter(|l| l["pid"].as_i64() == Some(*pid)).count();
        assert_eq!(n, 5, "worker {pid}: {lines:#?}");
    }
    assert_eq!(per_worker(&lines, "PYTEST_ABORT_GPU"), cuda);
    let slots = set(per_worker(&lines, "PYTEST_ABORT_GPU_SLOT").into_values());
    assert_eq!(slots, set(["0", "1", "2", "3"].map(|g| Some(g.into()))));
    let err = r.stderr();
    let after_header = err.lines().skip_while(|l| !l.contains("pytest-abort summary")).nth(1).unwrap_or("");
    assert!(after_header.starts_with("GPUs 0,1,2,3 (nvidia, from --gpus): 4 slots, 1 per GPU; 4 workers"), "{err}");
}

#[test]
fn a_crashed_workers_replacement_takes_its_slot_and_the_record_names_the_gpu() {
    let s = suite();
    s.write("test_a.py", &module(12, "\nimport ctypes\n\ndef test_crash():\n    ctypes.string_at(0)\n"));
    // Four slots, two workers: the replacement (gw2) must not take slot 2.
    let r = wrap(&s, &[], &["--gpus", "0,1", "--per-gpu", "2"], &["-n", "2"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("test_crash");
    let lines = seen(&s);
    let cuda = per_worker(&lines, "CUDA_VISIBLE_DEVICES");
    let dead_gpu = cuda.get(&(rec.pid.parse::<i64>().unwrap())).cloned().flatten();
    assert_eq!(Some(rec.gpu_id.clone()), dead_gpu, "the record names the dead worker's GPU: {lines:#?}");
    // Three workers: the two first and the dead one's replacement, on its GPU.
    assert_eq!(cuda.len(), 3, "{lines:#?}");
    let first_line = |pid: &i64| lines.iter().position(|l| l["pid"].as_i64() == Some(*pid)).unwrap();
    let newest = cuda.keys().max_by_key(|p| first_line(p)).unwrap();
    assert_eq!(cuda[newest], dead_gpu, "the replacement took the freed slot: {lines:#?}");
    let slot_of = per_worker(&lines, "PYTEST_ABORT_GPU_SLOT");
    assert_eq!(slot_of[newest], slot_of[&rec.pid.parse::<i64>().unwrap()]);
    assert!(
        r.stderr().contains(&format!(
            "crashes per GPU: 0: {}, 1: {}",
            u8::from(rec.gpu_id == "0"),
            u8::from(rec.gpu_id == "1")
        )),
        "{}",
        r.dump()
    );
}

#[test]
fn the_callers_cuda_visible_devices_is_the_whole_inventory() {
    let s = suite();
    s.write("test_a.py", &module(6, ""));
    let r = wrap(&s, &[("CUDA_VISIBLE_DEVICES", "5,7")], &["--gpus", "auto"], &[]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let cuda = per_worker(&seen(&s), "CUDA_VISIBLE_DEVICES");
    assert_eq!(cuda.len(), 2);
    assert_eq!(set(cuda.into_values()), set([Some("5".into()), Some("7".into())]));
    assert!(r.stderr().contains("GPUs 5,7 (nvidia, from CUDA_VISIBLE_DEVICES=5,7): 2 slots"), "{}", r.dump());
}

#[test]
fn a_serial_run_sees_every_gpu_and_takes_no_slot() {
    let s = suite();
    s.write("test_a.py", &module(2, ""));
    let r = wrap(&s, &[("PYTEST_ABORT_GPUS", "3,4")], &[], &["-n", "0"]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let lines = seen(&s);
    assert!(lines.iter().all(|l| l["CUDA_VISIBLE_DEVICES"] == "3,4" && l["PYTEST_ABORT_GPU"] == "3,4"), "{lines:#?}");
    assert!(lines.iter().all(|l| l["PYTEST_ABORT_GPU_SLOT"].is_null()), "{lines:#?}");
    assert!(r.stderr().contains("no xdist worker took a slot (serial: every GPU visible)"), "{}", r.dump());
}

#[test]
fn amd_workers_get_rocr_with_hip_zero_and_no_cuda() {
    let s = suite();
    s.write("test_a.py", &module(6, "\nimport ctypes\n\ndef test_crash():\n    ctypes.string_at(0)\n"));
    // The caller's HIP/CUDA variables must not leak into the workers.
    let env = [("HIP_VISIBLE_DEVICES", "1"), ("CUDA_VISIBLE_DEVICES", "9")];
    let r = wrap(&s, &env, &["--gpus", "2,3", "--gpu-vendor", "amd"], &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let lines = seen(&s);
    let rocr = per_worker(&lines, "ROCR_VISIBLE_DEVICES");
    assert_eq!(set(rocr.values().cloned()), set([Some("2".into()), Some("3".into())]), "{lines:#?}");
    assert!(per_worker(&lines, "HIP_VISIBLE_DEVICES").values().all(|v| v.as_deref() == Some("0")), "{lines:#?}");
    assert!(per_worker(&lines, "CUDA_VISIBLE_DEVICES").values().all(Option::is_none), "{lines:#?}");
    // The record names the physical GPU (ROCR's id), not HIP's renumbered 0.
    let rec = r.record("test_crash");
    assert_eq!(Some(rec.gpu_id.clone()), rocr[&rec.pid.parse::<i64>().unwrap()], "{lines:#?}");
}

/// A node with a fake AMD topology (`gpus` GPU nodes) under a probe root.
fn fake_amd_root(dir: &Path, gpus: usize) {
    let nodes = dir.join("sys/class/kfd/kfd/topology/nodes");
    for i in 0..=gpus {
        std::fs::create_dir_all(nodes.join(i.to_string())).unwrap();
        let simd = if i == 0 { 0 } else { 304 };
        std::fs::write(nodes.join(format!("{i}/properties")), format!("simd_count {simd}\n")).unwrap();
    }
}

#[test]
fn auto_detects_a_fake_amd_node() {
    let s = suite();
    s.write("test_a.py", &module(4, ""));
    let root = tempfile::tempdir().unwrap();
    fake_amd_root(root.path(), 2);
    let path = format!("{}:{}", root.path().display(), venv_bin().display());
    let env = [("PYTEST_ABORT_GPU_PROBE_ROOT", root.path().to_str().unwrap()), ("PATH", path.as_str())];
    let r = wrap(&s, &env, &["--gpus", "auto"], &[]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let rocr = per_worker(&seen(&s), "ROCR_VISIBLE_DEVICES");
    assert_eq!(set(rocr.into_values()), set([Some("0".into()), Some("1".into())]));
    assert!(r.stderr().contains("GPUs 0,1 (amd, from /sys/class/kfd topology)"), "{}", r.dump());
}

#[test]
fn auto_detects_gpus_with_nvidia_smi_and_asks_cuda_for_its_order() {
    let s = suite();
    s.write("test_a.py", &module(4, ""));
    let root = tempfile::tempdir().unwrap();
    let tool = root.path().join("nvidia-smi");
    let listing = "GPU 0: NVIDIA H200 (UUID: GPU-0a1b)\nGPU 1: NVIDIA H200 (UUID: GPU-2c3d)\n";
    std::fs::write(&tool, format!("#!/bin/sh\n[ \"$1\" = -L ] && printf '{listing}'\nexit 0\n")).unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", root.path().display(), venv_bin().display());
    let env = [("PYTEST_ABORT_GPU_PROBE_ROOT", root.path().to_str().unwrap()), ("PATH", path.as_str())];
    let r = wrap(&s, &env, &["--gpus", "auto"], &[]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let lines = seen(&s);
    let cuda = per_worker(&lines, "CUDA_VISIBLE_DEVICES");
    assert_eq!(set(cuda.into_values()), set([Some("0".into()), Some("1".into())]), "{lines:#?}");
    assert!(lines.iter().all(|l| l["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"), "{lines:#?}");
    assert!(r.stderr().contains("GPUs 0,1 (nvidia, from nvidia-smi -L): 2 slots"), "{}", r.dump());
}

#[test]
fn per_gpu_two_puts_two_workers_on_each_gpu_unless_n_is_given() {
    let s = suite();
    s.write("test_a.py", &module(8, ""));
    let state = s.path().join("state");
    let kept = ["--keep-state", "--state-dir", state.to_str().unwrap()];
    let r = wrap(&s, &[], &[&["--gpus", "0,1", "--per-gpu", "2"][..], &kept].concat(), &[]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    let lines = seen(&s);
    let cuda = per_worker(&lines, "CUDA_VISIBLE_DEVICES");
    assert_eq!(cuda.len(), 4, "{lines:#?}");
    let on = |g: &str| cuda.values().filter(|v| v.as_deref() == Some(g)).count();
    assert_eq!((on("0"), on("1")), (2, 2), "{lines:#?}");
    assert_eq!(set(per_worker(&lines, "PYTEST_ABORT_GPU_SLOT").into_values()).len(), 4);
    std::fs::remove_file(s.path().join("seen.jsonl")).unwrap();
    let r = wrap(&s, &[], &[&["--gpus", "0,1", "--per-gpu", "2"][..], &kept].concat(), &["-n", "1"]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert_eq!(per_worker(&seen(&s), "CUDA_VISIBLE_DEVICES").len(), 1, "the user's -n wins");
    // The kept state folder's slots of the first invocation do not count.
    assert!(r.stderr().contains("4 slots, 2 per GPU; 1 worker took a slot"), "{}", r.dump());
}

#[test]
fn a_gpu_whose_workers_keep_dying_is_quarantined() {
    let s = suite();
    let state = s.path().join("state");
    // GPU 1 is a bad card: every worker on it dies in its first test. The
    // worker on GPU 0 holds its first test until GPU 1 is quarantined (at
    // most 60 s), so it cannot finish the suite before the second death.
    let bad = format!(
        r#"
import ctypes, os, time, pytest
QUARANTINE = {q:?}
_held = []

@pytest.fixture(autouse=True)
def _bad_card():
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "1":
        ctypes.string_at(0)
    if not _held:
        _held.append(1)
        deadline = time.time() + 60
        while not os.path.exists(QUARANTINE) and time.time() < deadline:
            time.sleep(0.1)
"#,
        q = state.join("gpu/quarantined").display().to_string()
    );
    s.write("test_a.py", &module(40, &bad));
    let args = ["--gpus", "0,1", "--gpu-quarantine", "2", "--state-dir", state.to_str().unwrap()];
    let r = wrap(&s, &[], &args, &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let records = r.records();
    assert_eq!(records.len(), 2, "{records:#?}\n{}", r.dump());
    assert!(records.iter().all(|r| r.gpu_id == "1"), "{records:#?}");
    let cuda = per_worker(&seen(&s), "CUDA_VISIBLE_DEVICES");
    assert_eq!(cuda.values().filter(|v| v.as_deref() == Some("1")).count(), 2, "no slot on GPU 1 after: {cuda:?}");
    let err = r.stderr();
    assert!(err.contains("GPU 1 quarantined after 2 worker deaths in a row"), "{err}");
    assert!(err.contains("crashes per GPU: 0: 0, 1: 2"), "{err}");
    assert!(err.contains("GPU 1 quarantined: its slots were not taken again"), "{err}");
}

#[test]
fn the_release_wait_holds_the_replacement_while_the_tool_lists_the_dead_pid() {
    let s = suite();
    let crash = "\nimport ctypes\n\ndef test_crash():\n    note('crash')\n    ctypes.string_at(0)\n";
    s.write("test_a.py", &module(20, crash));
    // A fake nvidia-smi that lists every worker that ever took a slot.
    let tools = tempfile::tempdir().unwrap();
    let state = s.path().join("state");
    let script = format!(
        "#!/bin/sh\necho called >> {calls}\nsed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1, 100 MiB/p' {log}\n",
        calls = s.path().join("tool-calls").display(),
        log = state.join("gpu/slots.jsonl").display()
    );
    let tool = tools.path().join("nvidia-smi");
    std::fs::write(&tool, script).unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", tools.path().display(), venv_bin().display());
    let args = ["--gpus", "0,1", "--gpu-release-wait", "6", "--state-dir", state.to_str().unwrap()];
    let r = wrap(&s, &[("PATH", path.as_str())], &args, &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("test_crash");
    let lines = seen(&s);
    let dead: i64 = rec.pid.parse().unwrap();
    let crashed_at = lines.iter().find(|l| l["where"] == "crash").unwrap()["t"].as_f64().unwrap();
    let first_line = |pid: i64| lines.iter().find(|l| l["pid"].as_i64() == Some(pid)).unwrap()["t"].as_f64().unwrap();
    let cuda = per_worker(&lines, "CUDA_VISIBLE_DEVICES");
    let replacement = *cuda.keys().max_by(|a, b| first_line(**a).total_cmp(&first_line(**b))).unwrap();
    assert_ne!(replacement, dead);
    let waited = first_line(replacement) - crashed_at;
    assert!(waited >= 6.0, "the replacement started {waited:.2}s after the crash: {lines:#?}");
    // It polled the tool (every 0.25 s) while the tool listed the dead pid.
    let calls = std::fs::read_to_string(s.path().join("tool-calls")).unwrap().lines().count();
    assert!(calls >= 8, "{calls} calls of the fake nvidia-smi");
}

#[test]
fn no_gpu_with_auto_is_one_line_and_exit_64() {
    let s = suite();
    s.write("test_a.py", &module(1, ""));
    let root = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", root.path().display(), venv_bin().display());
    let env = [
        ("PYTEST_ABORT_GPU_PROBE_ROOT", root.path().to_str().unwrap()),
        ("PATH", path.as_str()),
        ("PYTEST_ABORT_GPUS", "auto"),
    ];
    let r = wrap(&s, &env, &[], &[]);
    assert_eq!(r.code(), 64, "{}", r.dump());
    let err = r.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no GPU found") && err.contains("--gpus none"), "{err}");
    assert!(seen(&s).is_empty(), "pytest must not start");
}

#[test]
fn the_gpu_node_example_leaves_crash_log_and_reports_in_one_folder() {
    let s = suite();
    s.write("test_a.py", &module(6, "\nimport ctypes\n\ndef test_crash():\n    ctypes.string_at(0)\n"));
    let out = s.path().join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gpu-node.sh");
    let mut cmd = Command::new(script);
    cmd.args(["-p", "no:cacheprovider", "-q"]);
    for v in GPU_VARS {
        cmd.env_remove(v);
    }
    cmd.env("OUT", &out).env("GPUS", "0,1").env("VENDOR", "amd").env("PYTHON", python());
    cmd.env("WRAP", env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rocr = per_worker(&seen(&s), "ROCR_VISIBLE_DEVICES");
    assert_eq!(set(rocr.into_values()), set([Some("0".into()), Some("1".into())]));
    let crashes = std::fs::read_to_string(out.join("crashes.jsonl")).unwrap();
    assert_eq!(crashes.lines().count(), 1, "{crashes}");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("test_crash") && junit.contains("type=\"crash\""), "{junit}");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["passed"], 6, "{report:#}");
    assert!(out.join("report.html").is_file() && out.join("events.jsonl").is_file());
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let slots = &summary["gpu_slots"];
    assert_eq!((slots["vendor"].as_str(), slots["slots"].as_u64()), (Some("amd"), Some(2)), "{summary:#}");
    let per_gpu: Vec<u64> = slots["gpus"].as_array().unwrap().iter().map(|g| g["crashes"].as_u64().unwrap()).collect();
    assert_eq!(per_gpu.iter().sum::<u64>(), 1, "{summary:#}");
}
