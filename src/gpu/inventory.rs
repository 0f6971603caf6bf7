//! The inventory: the GPUs a wrapped run hands out as slots, always a
//! subset of what the job was given. An explicit list is taken as is (no
//! detection: it works without any GPU); otherwise the caller's allocation
//! wins ([`super::caller`]), else what [`super::detect`] finds; a count
//! takes the first N of those.

use super::args::{GpusArg, VendorArg};
use super::detect::{self, Probe};
use super::{caller, Inventory, Vendor};

/// Why no inventory could be made (exit status 64, one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// `auto` or a count, and no GPU in the allocation or on the node.
    #[error(
        "--gpus {arg}: no GPU found ({looked}); give the GPUs as --gpus 0,1,... or run without slots (--gpus none)"
    )]
    NoGpu {
        /// What `--gpus` was.
        arg: String,
        /// Where it looked, in words.
        looked: String,
    },
    /// A count larger than what was found.
    #[error("--gpus {wanted}: only {found} GPU(s) found ({from})")]
    TooFew {
        /// The count asked for.
        wanted: usize,
        /// How many there are.
        found: usize,
        /// Where they came from.
        from: String,
    },
}

/// Resolves `--gpus` (never [`GpusArg::None`]: that means no slots) into an
/// inventory. `env` is the caller's environment; `probe` is where
/// detection looks.
pub fn resolve(
    arg: &GpusArg,
    vendor: VendorArg,
    env: &dyn Fn(&str) -> Option<String>,
    probe: &dyn Probe,
) -> Result<Inventory, InventoryError> {
    let wanted = match vendor {
        VendorArg::Auto => None,
        VendorArg::Nvidia => Some(Vendor::Nvidia),
        VendorArg::Amd => Some(Vendor::Amd),
    };
    if let GpusArg::List(ids) = arg {
        let vendor = wanted.unwrap_or_else(|| list_vendor(env, probe));
        return Ok(Inventory { vendor, gpus: ids.clone(), source: "--gpus".into(), pci_bus_order: false });
    }
    let allocation = caller::allocation(wanted, env);
    let detected = allocation.is_none();
    let found = match allocation {
        Some(a) => Some((a.vendor, a.gpus, a.source)),
        None => detect::detect(wanted, probe),
    };
    let Some((vendor, gpus, source)) = found.filter(|(_, g, _)| !g.is_empty()) else {
        let looked = match caller::allocation(wanted, env) {
            Some(a) => format!("{} gives this job none", a.source),
            None => looked_at(wanted),
        };
        return Err(InventoryError::NoGpu { arg: arg.to_string(), looked });
    };
    let pci_bus_order = detected && vendor == Vendor::Nvidia && env("CUDA_DEVICE_ORDER").is_none();
    match *arg {
        GpusArg::Count(n) if n > gpus.len() => {
            Err(InventoryError::TooFew { wanted: n, found: gpus.len(), from: source })
        }
        GpusArg::Count(n) => {
            let source = format!("first {n} of {source}");
            Ok(Inventory { vendor, gpus: gpus[..n].to_vec(), source, pci_bus_order })
        }
        _ => Ok(Inventory { vendor, gpus, source, pci_bus_order }),
    }
}

/// An explicit list's vendor under `--gpu-vendor auto`: AMD when the caller
/// set ROCR/HIP_VISIBLE_DEVICES or the KFD topology has a GPU node, else
/// NVIDIA (no tool is run).
fn list_vendor(env: &dyn Fn(&str) -> Option<String>, probe: &dyn Probe) -> Vendor {
    if env("ROCR_VISIBLE_DEVICES").is_some() || env("HIP_VISIBLE_DEVICES").is_some() {
        return Vendor::Amd;
    }
    let nodes = probe.root().join("sys/class/kfd/kfd/topology/nodes");
    let any_gpu = std::fs::read_dir(nodes).into_iter().flatten().flatten().any(|e| {
        let props = std::fs::read_to_string(e.path().join("properties")).unwrap_or_default();
        props.lines().any(|l| l.strip_prefix("simd_count ").and_then(|v| v.trim().parse::<u64>().ok()) > Some(0))
    });
    if any_gpu {
        Vendor::Amd
    } else {
        Vendor::Nvidia
    }
}

/// Where detection looked, in words (for the no-GPU line).
fn looked_at(vendor: Option<Vendor>) -> String {
    let nvidia = "CUDA_VISIBLE_DEVICES, nvidia-smi -L, /proc/driver/nvidia/gpus";
    let amd = "ROCR/HIP_VISIBLE_DEVICES, /sys/class/kfd topology, amd-smi, rocm-smi";
    match vendor {
        Some(Vendor::Nvidia) => format!("looked at {nvidia}"),
        Some(Vendor::Amd) => format!("looked at {amd}"),
        None => format!("looked at {nvidia}, {amd}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::detect::tests::Fake;
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn an_explicit_list_needs_no_gpu() {
        let list = GpusArg::List(vec!["0".into(), "1".into(), "2".into(), "3".into()]);
        let inv = resolve(&list, VendorArg::Auto, &env(&[]), &Fake::new()).unwrap();
        assert_eq!((inv.vendor, inv.gpus.len(), inv.source.as_str()), (Vendor::Nvidia, 4, "--gpus"));
        let amd = Fake::new();
        amd.amd_topology(2);
        assert_eq!(resolve(&list, VendorArg::Auto, &env(&[]), &amd).unwrap().vendor, Vendor::Amd);
        assert_eq!(resolve(&list, VendorArg::Nvidia, &env(&[]), &amd).unwrap().vendor, Vendor::Nvidia);
    }

    #[test]
    fn the_callers_allocation_wins_over_detection() {
        let f = Fake::new();
        f.amd_topology(8);
        let inv = resolve(&GpusArg::Auto, VendorArg::Auto, &env(&[("CUDA_VISIBLE_DEVICES", "5,7")]), &f).unwrap();
        assert_eq!((inv.vendor, inv.gpus), (Vendor::Nvidia, vec!["5".to_string(), "7".to_string()]));
        let inv = resolve(&GpusArg::Count(1), VendorArg::Auto, &env(&[("ROCR_VISIBLE_DEVICES", "6,2")]), &f).unwrap();
        assert_eq!((inv.vendor, inv.gpus), (Vendor::Amd, vec!["6".to_string()]));
    }

    #[test]
    fn detected_nvidia_indexes_ask_cuda_for_pci_bus_order() {
        let mut f = Fake::new();
        f.tools.push(("nvidia-smi", "GPU 0: A (UUID: GPU-a)\nGPU 1: B (UUID: GPU-b)\n".into()));
        assert!(resolve(&GpusArg::Auto, VendorArg::Auto, &env(&[]), &f).unwrap().pci_bus_order);
        let own_order = env(&[("CUDA_DEVICE_ORDER", "FASTEST_FIRST")]);
        assert!(!resolve(&GpusArg::Auto, VendorArg::Auto, &own_order, &f).unwrap().pci_bus_order);
        let given = env(&[("CUDA_VISIBLE_DEVICES", "1")]);
        assert!(!resolve(&GpusArg::Auto, VendorArg::Auto, &given, &f).unwrap().pci_bus_order);
        let list = GpusArg::List(vec!["0".into()]);
        assert!(!resolve(&list, VendorArg::Auto, &env(&[]), &f).unwrap().pci_bus_order);
    }

    #[test]
    fn a_fake_amd_node_is_detected_and_counted() {
        let f = Fake::new();
        f.amd_topology(8);
        let inv = resolve(&GpusArg::Count(4), VendorArg::Amd, &env(&[]), &f).unwrap();
        assert_eq!(inv.gpus, vec!["0", "1", "2", "3"]);
        let err = resolve(&GpusArg::Count(9), VendorArg::Auto, &env(&[]), &f).unwrap_err();
        assert!(matches!(err, InventoryError::TooFew { wanted: 9, found: 8, .. }), "{err}");
    }

    #[test]
    fn no_gpu_is_one_line_naming_where_it_looked() {
        let err = resolve(&GpusArg::Auto, VendorArg::Auto, &env(&[]), &Fake::new()).unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n') && line.contains("no GPU found") && line.contains("nvidia-smi"), "{line}");
        let empty = resolve(&GpusArg::Auto, VendorArg::Auto, &env(&[("CUDA_VISIBLE_DEVICES", "")]), &Fake::new());
        assert!(empty.unwrap_err().to_string().contains("CUDA_VISIBLE_DEVICES= gives this job none"));
    }
}
