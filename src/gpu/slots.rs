//! The wrapper's side of the slots the plugin takes, all in
//! `<state>/gpu/`:
//!
//! - `slot-<i>.lock`: the plugin's `flock`, held by a worker for its life;
//! - `slots.jsonl`: one line per slot taken (`pid`, `worker`, `slot`,
//!   `gpu`, `run`), appended by the plugin: which GPU a dead pid used;
//! - `slot-<i>.dead`: written here when a slot's worker dies (at ptrace's
//!   exit stop, before the kernel frees its lock), holding its pid: the
//!   next worker to take that slot first waits (at most the plan's
//!   `release_wait`) while `nvidia-smi`/`amd-smi`/`rocm-smi` still list the
//!   pid on a GPU. The wait lives in the plugin because only there does it
//!   delay the replacement without holding up the wrapper, which must keep
//!   following every other process;
//! - `deaths-<k>`: worker deaths in a row on GPU `k` of the inventory,
//!   counted here; the plugin removes it when one of that GPU's workers
//!   passes a test;
//! - `quarantined`: GPU ids, one a line, whose slots are no longer taken
//!   (`--gpu-quarantine N`: N deaths in a row while another GPU is healthy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::model::Crash;

/// `<state>/gpu`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("gpu")
}

/// Empties `<state>/gpu` for a new wrapper invocation (a kept state folder
/// holds the last one's slots, deaths and quarantine).
pub fn reset(state_dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let d = dir(state_dir);
    match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot clear the GPU slot folder", d.display()))
        }
        _ => {}
    }
    std::fs::create_dir_all(&d).with_context(|| format!("{}: cannot create the GPU slot folder", d.display()))
}

/// One slot taken by a worker (a line of `slots.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Take {
    /// The worker process.
    pub pid: i32,
    /// `gwN`.
    pub worker: String,
    /// The slot number.
    pub slot: usize,
    /// The GPU as the inventory names it.
    pub gpu: String,
    /// The 1-based run.
    #[serde(default)]
    pub run: u32,
}

/// Every slot taken so far, in order (unreadable lines skipped).
pub fn takes(state_dir: &Path) -> Vec<Take> {
    let text = std::fs::read_to_string(dir(state_dir).join("slots.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The GPU ids quarantined so far.
pub fn quarantined(state_dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir(state_dir).join("quarantined")).unwrap_or_default();
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// What a worker's death did to its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeathNoted {
    /// The GPU the worker used.
    pub gpu: String,
    /// Deaths in a row on that GPU, this one included.
    pub in_a_row: u32,
    /// True when this death quarantined the GPU.
    pub quarantined: bool,
}

/// Notes the death of worker `pid`: its slot's next worker is to wait for
/// the GPU's release, and the GPU's deaths in a row go up (quarantining it
/// at the plan's limit while another GPU is healthy). `None` when `pid`
/// held no slot.
pub fn note_death(state_dir: &Path, plan: &Plan, pid: i32) -> Option<DeathNoted> {
    let take = takes(state_dir).into_iter().rev().find(|t| t.pid == pid)?;
    let d = dir(state_dir);
    let _ = std::fs::write(d.join(format!("slot-{}.dead", take.slot)), pid.to_string());
    let index = plan.gpus.iter().position(|g| *g == take.gpu)?;
    let in_a_row = deaths(&d, index) + 1;
    let _ = std::fs::write(d.join(format!("deaths-{index}")), in_a_row.to_string());
    let mut noted = DeathNoted { gpu: take.gpu.clone(), in_a_row, quarantined: false };
    let Some(limit) = plan.quarantine else { return Some(noted) };
    let already = quarantined(state_dir);
    let healthy_other =
        plan.gpus.iter().enumerate().any(|(k, g)| k != index && !already.contains(g) && deaths(&d, k) < limit);
    if in_a_row >= limit && healthy_other && !already.contains(&take.gpu) {
        let mut list: Vec<String> = already.into_iter().collect();
        list.push(take.gpu.clone());
        let text: String = list.iter().map(|g| format!("{g}\n")).collect();
        noted.quarantined = crate::fsutil::atomic_write(&d.join("quarantined"), text.as_bytes()).is_ok();
    }
    Some(noted)
}

/// Deaths in a row on GPU `index` (0 when never written or reset).
fn deaths(dir: &Path, index: usize) -> u32 {
    std::fs::read_to_string(dir.join(format!("deaths-{index}"))).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// One GPU in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUse {
    /// The GPU as the inventory names it.
    pub gpu: String,
    /// Worker processes that took one of its slots (replacements included).
    pub workers: usize,
    /// Crash records naming it.
    pub crashes: usize,
    /// True when it was quarantined.
    pub quarantined: bool,
}

/// How a wrapped run used its GPU slots: the summary's first line and
/// crashes per GPU, and `summary.json`'s `gpu_slots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// `nvidia` or `amd`.
    pub vendor: String,
    /// Where the inventory came from.
    pub source: String,
    /// Slots: GPUs x `per_gpu`.
    pub slots: usize,
    /// Workers per GPU.
    pub per_gpu: u32,
    /// Worker processes that took a slot (0: pytest ran serial, with every
    /// GPU visible).
    pub worker_starts: usize,
    /// Per GPU, in inventory order.
    pub gpus: Vec<GpuUse>,
}

impl Usage {
    /// The usage of a finished session, read from the state folder.
    pub fn read(state_dir: &Path, plan: &Plan, crashes: &[Crash]) -> Usage {
        let takes = takes(state_dir);
        let quarantined = quarantined(state_dir);
        let gpus = plan
            .gpus
            .iter()
            .map(|g| GpuUse {
                gpu: g.clone(),
                workers: takes.iter().filter(|t| t.gpu == *g).count(),
                crashes: crashes.iter().filter(|c| c.gpu_id == *g).count(),
                quarantined: quarantined.contains(g),
            })
            .collect();
        Usage {
            vendor: plan.vendor.as_str().to_string(),
            source: plan.source.clone(),
            slots: plan.slots(),
            per_gpu: plan.per_gpu,
            worker_starts: takes.len(),
            gpus,
        }
    }

    /// The summary's first line: which GPUs, how many slots and workers.
    pub fn headline(&self) -> String {
        let ids: Vec<&str> = self.gpus.iter().map(|g| g.gpu.as_str()).collect();
        let workers = match self.worker_starts {
            0 => "no xdist worker took a slot (serial: every GPU visible)".to_string(),
            1 => "1 worker took a slot".to_string(),
            n => format!("{n} workers took slots"),
        };
        format!(
            "GPUs {} ({}, from {}): {} slots, {} per GPU; {workers}",
            ids.join(","),
            self.vendor,
            self.source,
            self.slots,
            self.per_gpu
        )
    }

    /// `crashes per GPU: 0: 1, 1: 0` and one line per quarantined GPU.
    pub fn tail_lines(&self) -> Vec<String> {
        let per: Vec<String> = self.gpus.iter().map(|g| format!("{}: {}", g.gpu, g.crashes)).collect();
        let mut out = vec![format!("crashes per GPU: {}", per.join(", "))];
        for g in self.gpus.iter().filter(|g| g.quarantined) {
            out.push(format!("GPU {} quarantined: its slots were not taken again after repeated worker deaths", g.gpu));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{Inventory, Vendor};

    fn plan(n: usize, quarantine: Option<u32>) -> Plan {
        let inv = Inventory {
            vendor: Vendor::Nvidia,
            gpus: (0..n).map(|i| i.to_string()).collect(),
            source: "--gpus".into(),
            pci_bus_order: false,
        };
        Plan::new(&inv, 1, 0.0, quarantine)
    }

    fn take(state: &Path, pid: i32, slot: usize, gpu: &str) {
        use std::io::Write as _;
        std::fs::create_dir_all(dir(state)).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir(state).join("slots.jsonl")).unwrap();
        writeln!(f, r#"{{"pid": {pid}, "worker": "gw{slot}", "slot": {slot}, "gpu": "{gpu}", "run": 1}}"#).unwrap();
    }

    #[test]
    fn a_death_marks_its_slot_for_the_release_wait() {
        let state = tempfile::tempdir().unwrap();
        take(state.path(), 100, 2, "2");
        let noted = note_death(state.path(), &plan(4, None), 100).unwrap();
        assert_eq!((noted.gpu.as_str(), noted.in_a_row, noted.quarantined), ("2", 1, false));
        assert_eq!(std::fs::read_to_string(dir(state.path()).join("slot-2.dead")).unwrap(), "100");
        assert_eq!(note_death(state.path(), &plan(4, None), 999), None);
    }

    #[test]
    fn quarantine_after_n_in_a_row_only_while_another_gpu_is_healthy() {
        let state = tempfile::tempdir().unwrap();
        let p = plan(2, Some(2));
        take(state.path(), 1, 1, "1");
        assert!(!note_death(state.path(), &p, 1).unwrap().quarantined);
        take(state.path(), 2, 1, "1");
        assert!(note_death(state.path(), &p, 2).unwrap().quarantined);
        assert_eq!(quarantined(state.path()).into_iter().collect::<Vec<_>>(), vec!["1"]);
        // GPU 0 now fails as often: it is the last healthy one, so it stays.
        for pid in [3, 4, 5] {
            take(state.path(), pid, 0, "0");
            assert!(!note_death(state.path(), &p, pid).unwrap().quarantined);
        }
        let usage = Usage::read(state.path(), &p, &[]);
        assert_eq!(usage.worker_starts, 5);
        assert!(usage.gpus[1].quarantined && !usage.gpus[0].quarantined);
        assert!(usage.headline().starts_with("GPUs 0,1 (nvidia, from --gpus): 2 slots, 1 per GPU; 5 workers"));
        assert!(usage.tail_lines()[1].contains("GPU 1 quarantined"));
    }
}
