//! GPU slots on a GPU node: which GPUs this job may use ([`inventory`]:
//! the caller's allocation, else what [`detect`] finds), how the wrapper
//! hands them to pytest ([`plan`]: the plan the plugin reads, the vendor's
//! variables), and what the workers did with them ([`slots`]: who held
//! which slot, deaths, quarantine, the summary's view).
//!
//! The slot itself is taken by the plugin (`shim/pytest_abort/_gpu.py`)
//! as an xdist worker imports it, before conftests and test modules: a
//! `flock` on `<state>/gpu/slot-<i>.lock`, which the kernel frees when the
//! worker dies, so its replacement takes the same slot (and GPU).

pub mod args;
pub mod caller;
pub mod detect;
pub mod inventory;
pub mod plan;
pub mod slots;

use serde::{Deserialize, Serialize};

/// Whose GPUs: the variables that select devices differ per vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// `CUDA_VISIBLE_DEVICES`.
    Nvidia,
    /// `ROCR_VISIBLE_DEVICES` (physical) with `HIP_VISIBLE_DEVICES=0`.
    Amd,
}

impl Vendor {
    /// The vendor's name as the options and records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
        }
    }
}

/// The GPUs this job may use, in slot order, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// NVIDIA or AMD.
    pub vendor: Vendor,
    /// The GPUs as the vendor's variable names them: indexes (`"5"`) or
    /// UUIDs (`"GPU-8f2c..."`), never empty.
    pub gpus: Vec<String>,
    /// Where the list came from, in words (`--gpus`, `CUDA_VISIBLE_DEVICES`,
    /// `nvidia-smi -L`, ...).
    pub source: String,
    /// NVIDIA indexes found by detection number the GPUs in PCI bus order
    /// (as `nvidia-smi` and `/proc` do), which CUDA follows only under
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`: true when the wrapper is to set it
    /// (the caller did not set `CUDA_DEVICE_ORDER`, nor the ids).
    #[serde(default)]
    pub pci_bus_order: bool,
}

/// The slot plan for the wrapper's GPU options: `Ok(None)` without
/// `--gpus` (or `PYTEST_ABORT_GPUS`), or with `none`. `env` is the
/// caller's environment; detection looks at the real node (or under
/// `PYTEST_ABORT_GPU_PROBE_ROOT`). No GPU for `auto`: [`crate::error::Error::NoGpu`].
pub fn prepare(
    args: &args::GpuArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<plan::Plan>, crate::error::Error> {
    let Some(arg) = args.gpus(env).map_err(crate::error::Error::Usage)? else { return Ok(None) };
    let probe = detect::System::from_env(env);
    let inv = inventory::resolve(&arg, args.gpu_vendor, env, &probe)
        .map_err(|e| crate::error::Error::NoGpu(e.to_string()))?;
    Ok(Some(plan::Plan::new(&inv, args.per_gpu, args.gpu_release_wait, args.gpu_quarantine)))
}
