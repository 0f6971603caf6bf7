//! Detection of the node's GPUs when the caller gave no allocation:
//! NVIDIA from `nvidia-smi -L`, else `/proc/driver/nvidia/gpus/*` (as many
//! as `/dev/nvidiaN` nodes exist, when any do); AMD from the KFD topology
//! (`/sys/class/kfd/kfd/topology/nodes/*/properties`, GPU nodes have
//! `simd_count > 0`), else `amd-smi list` or `rocm-smi --showid`.
//!
//! Everything goes through a [`Probe`], so tests hand in a fake root
//! folder and fake command output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Vendor;

/// Where detection looks: a root folder for `/proc`, `/sys` and `/dev`,
/// and a way to run a tool.
pub trait Probe {
    /// The folder that stands for `/`.
    fn root(&self) -> &Path;
    /// The standard output of `program args...`, or `None` when it cannot
    /// run, fails or takes too long.
    fn run(&self, program: &str, args: &[&str]) -> Option<String>;
}

/// The real system: `root` (normally `/`) and programs on `PATH`, each
/// given at most [`System::TOOL_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct System {
    /// The folder that stands for `/`.
    pub root: PathBuf,
}

impl System {
    /// The longest a vendor tool may take (a wedged driver can hang it).
    pub const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

    /// The environment variable that moves the root (a container that
    /// mounts the host's `/proc`, `/sys` and `/dev` elsewhere; tests).
    pub const ENV_ROOT: &'static str = "PYTEST_ABORT_GPU_PROBE_ROOT";

    /// `/`, or the folder in [`System::ENV_ROOT`].
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> System {
        let root = env(Self::ENV_ROOT).filter(|r| !r.is_empty()).map_or_else(|| PathBuf::from("/"), PathBuf::from);
        System { root }
    }
}

impl Probe for System {
    fn root(&self) -> &Path {
        &self.root
    }

    fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        run_bounded(program, args, Self::TOOL_TIMEOUT)
    }
}

/// Runs a tool with its output captured, killed after `limit`: its
/// stdout when it exits with status 0 (see [`crate::tool::output_within`]).
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> Option<String> {
    let (status, out) = crate::tool::output_within(std::process::Command::new(program).args(args), limit)?;
    status.success().then(|| String::from_utf8_lossy(&out).into_owned())
}

/// The GPUs found for `vendor` (`None`: NVIDIA first, then AMD) and how
/// they were found, in words; `None` when nothing is found.
pub fn detect(vendor: Option<Vendor>, probe: &dyn Probe) -> Option<(Vendor, Vec<String>, String)> {
    if vendor != Some(Vendor::Amd) {
        if let Some((ids, how)) = nvidia(probe) {
            return Some((Vendor::Nvidia, ids, how));
        }
    }
    if vendor != Some(Vendor::Nvidia) {
        if let Some((ids, how)) = amd(probe) {
            return Some((Vendor::Amd, ids, how));
        }
    }
    None
}

/// NVIDIA GPU indexes: `nvidia-smi -L` (`GPU 0: NVIDIA H200 (UUID: ...)`),
/// else one per `/proc/driver/nvidia/gpus/<pci id>`, capped at the
/// `/dev/nvidiaN` nodes present (a container sees only its own).
fn nvidia(probe: &dyn Probe) -> Option<(Vec<String>, String)> {
    if let Some(text) = probe.run("nvidia-smi", &["-L"]) {
        let ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("GPU "))
            .filter_map(|rest| rest.split(':').next())
            .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            return Some((ids, "nvidia-smi -L".into()));
        }
    }
    let gpus = entries(&probe.root().join("proc/driver/nvidia/gpus")).len();
    if gpus == 0 {
        return None;
    }
    let devs = entries(&probe.root().join("dev"))
        .iter()
        .filter(|n| n.strip_prefix("nvidia").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
        .count();
    let n = if devs > 0 { gpus.min(devs) } else { gpus };
    Some(((0..n).map(|i| i.to_string()).collect(), "/proc/driver/nvidia/gpus".into()))
}

/// AMD GPU indexes (as ROCR_VISIBLE_DEVICES counts them): the KFD
/// topology's GPU nodes in node order, else `amd-smi list` (`GPU: 0`),
/// else `rocm-smi --showid` (`GPU[0] : ...`).
fn amd(probe: &dyn Probe) -> Option<(Vec<String>, String)> {
    let nodes = probe.root().join("sys/class/kfd/kfd/topology/nodes");
    let mut numbered: Vec<(u32, String)> =
        entries(&nodes).into_iter().filter_map(|n| n.parse::<u32>().ok().map(|i| (i, n))).collect();
    numbered.sort();
    let gpu_nodes = numbered
        .iter()
        .filter(|(_, n)| {
            let props = std::fs::read_to_string(nodes.join(n).join("properties")).unwrap_or_default();
            props.lines().any(|l| l.strip_prefix("simd_count ").and_then(|v| v.trim().parse::<u64>().ok()) > Some(0))
        })
        .count();
    if gpu_nodes > 0 {
        return Some(((0..gpu_nodes).map(|i| i.to_string()).collect(), "/sys/class/kfd topology".into()));
    }
    for (tool, args, prefix) in [("amd-smi", &["list"][..], "GPU:"), ("rocm-smi", &["--showid"][..], "GPU[")] {
        let Some(text) = probe.run(tool, args) else { continue };
        let mut ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.trim_start().chars().take_while(char::is_ascii_digit).collect::<String>())
            .filter(|i| !i.is_empty())
            .collect();
        ids.dedup();
        if !ids.is_empty() {
            return Some((ids, format!("{tool} {}", args.join(" "))));
        }
    }
    None
}

/// The names in a folder (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake node: a root folder and canned tool output.
    pub(crate) struct Fake {
        pub root: tempfile::TempDir,
        pub tools: Vec<(&'static str, String)>,
    }

    impl Fake {
        pub(crate) fn new() -> Fake {
            Fake { root: tempfile::tempdir().unwrap(), tools: Vec::new() }
        }

        pub(crate) fn file(&self, rel: &str, text: &str) -> &Fake {
            let p = self.root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        /// An AMD node: node 0 a CPU, then `gpus` GPU nodes.
        pub(crate) fn amd_topology(&self, gpus: usize) -> &Fake {
            self.file("sys/class/kfd/kfd/topology/nodes/0/properties", "cpu_cores_count 64\nsimd_count 0\n");
            for i in 1..=gpus {
                let props = format!("cpu_cores_count 0\nsimd_count 304\ngpu_id {}\n", 1000 + i);
                self.file(&format!("sys/class/kfd/kfd/topology/nodes/{i}/properties"), &props);
            }
            self
        }
    }

    impl Probe for Fake {
        fn root(&self) -> &Path {
            self.root.path()
        }
        fn run(&self, program: &str, _args: &[&str]) -> Option<String> {
            self.tools.iter().find(|(p, _)| *p == program).map(|(_, out)| out.clone())
        }
    }

    #[test]
    fn nvidia_smi_list() {
        let mut f = Fake::new();
        f.tools.push((
            "nvidia-smi",
            "GPU 0: NVIDIA H200 (UUID: GPU-1b2c)\nGPU 1: NVIDIA H200 (UUID: GPU-3d4e)\n  MIG 1g.18gb Device 0: (UUID: MIG-x)\n".into(),
        ));
        assert_eq!(detect(None, &f), Some((Vendor::Nvidia, vec!["0".into(), "1".into()], "nvidia-smi -L".into())));
    }

    #[test]
    fn nvidia_proc_capped_by_dev_nodes() {
        let f = Fake::new();
        for pci in ["0000:17:00.0", "0000:2a:00.0", "0000:3d:00.0"] {
            f.file(&format!("proc/driver/nvidia/gpus/{pci}/information"), "Model: H200\n");
        }
        assert_eq!(detect(None, &f).unwrap().1, vec!["0", "1", "2"]);
        f.file("dev/nvidia0", "").file("dev/nvidiactl", "").file("dev/nvidia-uvm", "");
        assert_eq!(detect(Some(Vendor::Nvidia), &f).unwrap().1, vec!["0"]);
        assert_eq!(detect(Some(Vendor::Amd), &f), None);
    }

    #[test]
    fn amd_topology_counts_gpu_nodes() {
        let f = Fake::new();
        f.amd_topology(8);
        let (vendor, ids, how) = detect(None, &f).unwrap();
        assert_eq!((vendor, ids.len(), ids[7].as_str()), (Vendor::Amd, 8, "7"));
        assert!(how.contains("kfd"), "{how}");
        assert_eq!(detect(Some(Vendor::Nvidia), &f), None);
    }

    #[test]
    fn amd_tools_when_no_topology() {
        let mut f = Fake::new();
        f.tools.push((
            "rocm-smi",
            "GPU[0]\t\t: Device ID: 0x74a1\nGPU[0]\t\t: Device Rev: 0x00\nGPU[1]\t\t: Device ID: 0x74a1\n".into(),
        ));
        assert_eq!(detect(Some(Vendor::Amd), &f).unwrap().1, vec!["0", "1"]);
        f.tools.insert(0, ("amd-smi", "GPU: 0\n    BDF: 0000:05:00.0\nGPU: 1\n    BDF: 0000:26:00.0\nGPU: 2\n".into()));
        assert_eq!(
            detect(None, &f).unwrap(),
            (Vendor::Amd, vec!["0".into(), "1".into(), "2".into()], "amd-smi list".into())
        );
    }

    #[test]
    fn nothing_found() {
        assert_eq!(detect(None, &Fake::new()), None);
    }

    #[test]
    fn a_tool_that_hangs_is_cut_off() {
        let t = std::time::Instant::now();
        assert_eq!(run_bounded("sleep", &["30"], Duration::from_millis(200)), None);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(run_bounded("echo", &["hi"], Duration::from_secs(10)).as_deref(), Some("hi\n"));
        assert_eq!(run_bounded("/nonexistent/tool", &[], Duration::from_secs(1)), None);
    }
}
