//! What the wrapper hands pytest for GPU slots: the plan the plugin reads
//! (JSON in [`ENV_PLAN`]) and the vendor's variables for the pytest
//! command itself.
//!
//! The pytest the wrapper starts (a serial run, or the xdist controller)
//! sees every GPU of the inventory; each xdist worker narrows that to its
//! slot's GPU as it imports the plugin. A serial run therefore has all of
//! the job's GPUs visible (`PYTEST_ABORT_GPU` lists them all) and no slot.

use serde::{Deserialize, Serialize};

use super::{Inventory, Vendor};

/// The environment variable that carries the [`Plan`] to the plugin.
pub const ENV_PLAN: &str = "PYTEST_ABORT_GPU_PLAN";
/// Set for tests: the physical GPU(s) this process uses.
pub const ENV_GPU: &str = "PYTEST_ABORT_GPU";
/// Set for tests in an xdist worker: its slot number.
pub const ENV_SLOT: &str = "PYTEST_ABORT_GPU_SLOT";

/// What the plugin needs to take slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Whose variables to set.
    pub vendor: Vendor,
    /// The inventory, in slot order: slot `i` is GPU `gpus[i % gpus.len()]`.
    pub gpus: Vec<String>,
    /// Workers per GPU (`--per-gpu`).
    pub per_gpu: u32,
    /// The `-n` the plugin adds when pytest was not given one (`None`:
    /// add none, e.g. a test rerun alone).
    pub workers: Option<u32>,
    /// Seconds a slot's next worker waits for a dead worker's process to
    /// leave the GPU.
    pub release_wait: f64,
    /// Where the inventory came from, in words (for the summary).
    pub source: String,
    /// `--gpu-quarantine`: worker deaths in a row that quarantine a GPU.
    pub quarantine: Option<u32>,
    /// Set `CUDA_DEVICE_ORDER=PCI_BUS_ID` (see [`Inventory::pci_bus_order`]).
    #[serde(default)]
    pub pci_bus_order: bool,
}

impl Plan {
    /// The plan for `inv`, with `per_gpu` workers per GPU.
    pub fn new(inv: &Inventory, per_gpu: u32, release_wait: f64, quarantine: Option<u32>) -> Plan {
        Plan {
            vendor: inv.vendor,
            gpus: inv.gpus.clone(),
            per_gpu,
            workers: Some(inv.gpus.len() as u32 * per_gpu),
            release_wait,
            source: inv.source.clone(),
            quarantine,
            pci_bus_order: inv.pci_bus_order,
        }
    }

    /// The number of slots: GPUs x workers per GPU.
    pub fn slots(&self) -> usize {
        self.gpus.len() * self.per_gpu as usize
    }

    /// The variables to set for a pytest command; `inject` says whether
    /// the plugin may add `-n`. Every GPU of the inventory is visible.
    pub fn env_set(&self, inject: bool) -> Vec<(String, String)> {
        let mut plan = self.clone();
        if !inject {
            plan.workers = None;
        }
        let all = self.gpus.join(",");
        let visible = match self.vendor {
            Vendor::Nvidia => "CUDA_VISIBLE_DEVICES",
            Vendor::Amd => "ROCR_VISIBLE_DEVICES",
        };
        let mut env = vec![
            (ENV_PLAN.into(), serde_json::to_string(&plan).unwrap_or_default()),
            (visible.into(), all.clone()),
            (ENV_GPU.into(), all),
        ];
        if self.pci_bus_order {
            env.push(("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()));
        }
        env
    }

    /// The variables to remove: a slot number from outside, and for AMD the
    /// ones that would renumber or override ROCR_VISIBLE_DEVICES.
    pub fn env_remove(&self) -> Vec<String> {
        let mut out = vec![ENV_SLOT.to_string()];
        if self.vendor == Vendor::Amd {
            out.extend(["HIP_VISIBLE_DEVICES".to_string(), "CUDA_VISIBLE_DEVICES".to_string()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_sees_every_gpu_and_the_plan() {
        let inv = Inventory {
            vendor: Vendor::Amd,
            gpus: vec!["4".into(), "5".into()],
            source: "--gpus".into(),
            pci_bus_order: false,
        };
        let plan = Plan::new(&inv, 2, 10.0, None);
        assert_eq!(plan.slots(), 4);
        let env = plan.env_set(true);
        assert!(env.contains(&("ROCR_VISIBLE_DEVICES".into(), "4,5".into())));
        let json: Plan = serde_json::from_str(&env[0].1).unwrap();
        assert_eq!(json.workers, Some(4));
        let alone: Plan = serde_json::from_str(&plan.env_set(false)[0].1).unwrap();
        assert_eq!(alone.workers, None);
        assert!(plan.env_remove().contains(&"CUDA_VISIBLE_DEVICES".to_string()));
    }
}
