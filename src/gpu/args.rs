//! The wrapper's GPU options (flattened into its command line) and the
//! parsing of `--gpus`.

use std::fmt;

/// The environment variable `--gpus` falls back to.
pub const ENV_GPUS: &str = "PYTEST_ABORT_GPUS";

/// What `--gpus` (or `PYTEST_ABORT_GPUS`) was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpusArg {
    /// `auto`: the caller's allocation, else every GPU detected.
    Auto,
    /// `none`: no slots (the same as not giving `--gpus`).
    None,
    /// `N`: the first N GPUs of what `auto` finds.
    Count(usize),
    /// `0,1,2,3` or UUIDs: exactly these, without detection. One GPU is
    /// written with a trailing comma (`3,`), since a lone number is a count.
    List(Vec<String>),
}

impl fmt::Display for GpusArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpusArg::Auto => f.write_str("auto"),
            GpusArg::None => f.write_str("none"),
            GpusArg::Count(n) => write!(f, "{n}"),
            GpusArg::List(ids) => write!(f, "{}", ids.join(",")),
        }
    }
}

/// Parses `--gpus`: `auto`, `none`, a count, or a comma-separated list of
/// ids or UUIDs (letters, digits, `-`, `_`, `:`, `.`, `/`: MIG UUIDs too).
pub fn parse_gpus(s: &str) -> Result<GpusArg, String> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "auto" => return Ok(GpusArg::Auto),
        "none" => return Ok(GpusArg::None),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("`{s}`: a GPU count must be at least 1 (or `none`)")),
            Ok(n) => Ok(GpusArg::Count(n)),
        };
    }
    let ids: Vec<String> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
    let valid = |id: &String| id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:./".contains(&b));
    if ids.is_empty() || !ids.iter().all(valid) {
        return Err(format!(
            "`{s}` is not `auto`, `none`, a count or a comma-separated list of GPU ids or UUIDs (one GPU: `3,`)"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(format!("`{s}` names GPU {dup} twice"));
    }
    Ok(GpusArg::List(ids))
}

/// `--gpu-vendor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VendorArg {
    /// The caller's variables decide (ROCR/HIP: AMD, CUDA: NVIDIA), else
    /// what is detected (NVIDIA first).
    #[default]
    Auto,
    /// NVIDIA: `CUDA_VISIBLE_DEVICES`.
    Nvidia,
    /// AMD: `ROCR_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`.
    Amd,
}

/// The wrapper's GPU-slot options.
#[derive(Debug, Clone, clap::Args)]
pub struct GpuArgs {
    /// Give every xdist worker its own GPU slot: `auto` (the job's
    /// CUDA/ROCR/HIP_VISIBLE_DEVICES, else every GPU detected), `none`, a
    /// count N (the first N of those), or ids/UUIDs `0,1,2,3` (no
    /// detection) [env: PYTEST_ABORT_GPUS].
    #[arg(long, value_name = "GPUS", value_parser = parse_gpus)]
    pub gpus: Option<GpusArg>,

    /// Workers per GPU: pytest gets `-n (GPUs x K)` unless it was given -n.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub per_gpu: u32,

    /// Whose GPUs: NVIDIA (CUDA_VISIBLE_DEVICES) or AMD (ROCR_VISIBLE_DEVICES
    /// with HIP_VISIBLE_DEVICES=0); `auto` decides from the caller's
    /// variables, else from what is found.
    #[arg(long, value_enum, value_name = "auto|nvidia|amd", default_value_t, hide_possible_values = true)]
    pub gpu_vendor: VendorArg,

    /// After N worker deaths in a row on one GPU (none of them passing a
    /// test) while another GPU is healthy, take no more slots on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub gpu_quarantine: Option<u32>,

    /// After a worker death, its slot's next worker waits up to SECS while
    /// nvidia-smi (or amd-smi/rocm-smi) still lists the dead process on the
    /// GPU (skipped when no such tool exists).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = wait_secs)]
    pub gpu_release_wait: f64,
}

impl Default for GpuArgs {
    /// The command line's defaults: no slots, one worker per GPU, 10 s.
    fn default() -> Self {
        GpuArgs { gpus: None, per_gpu: 1, gpu_vendor: VendorArg::Auto, gpu_quarantine: None, gpu_release_wait: 10.0 }
    }
}

fn wait_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0 to 3600")),
    }
}

impl GpuArgs {
    /// `--gpus`, else `PYTEST_ABORT_GPUS` from `env` (`None`: no slots).
    /// The other GPU options without either are an error (one line): they
    /// would silently do nothing.
    pub fn gpus(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<GpusArg>, String> {
        let arg = match &self.gpus {
            Some(a) => a.clone(),
            None => match env(ENV_GPUS).filter(|v| !v.trim().is_empty()) {
                Some(v) => parse_gpus(&v).map_err(|e| format!("{ENV_GPUS}: {e}"))?,
                None if self.per_gpu != 1 || self.gpu_quarantine.is_some() || self.gpu_vendor != VendorArg::Auto => {
                    return Err(format!(
                        "--per-gpu, --gpu-vendor and --gpu-quarantine need --gpus (or {ENV_GPUS}); --gpus none turns slots off"
                    ))
                }
                None => return Ok(None),
            },
        };
        Ok(Some(arg).filter(|a| *a != GpusArg::None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(parse_gpus("auto"), Ok(GpusArg::Auto));
        assert_eq!(parse_gpus("None"), Ok(GpusArg::None));
        assert_eq!(parse_gpus("4"), Ok(GpusArg::Count(4)));
        assert_eq!(parse_gpus("0,1, 2,3"), Ok(GpusArg::List(vec!["0".into(), "1".into(), "2".into(), "3".into()])));
        assert_eq!(parse_gpus("3,"), Ok(GpusArg::List(vec!["3".into()])));
        assert_eq!(parse_gpus("GPU-8f2c-11"), Ok(GpusArg::List(vec!["GPU-8f2c-11".into()])));
        assert_eq!(parse_gpus("MIG-GPU-a/1/2,"), Ok(GpusArg::List(vec!["MIG-GPU-a/1/2".into()])));
        assert!(parse_gpus("0").is_err());
        assert!(parse_gpus("1,1").unwrap_err().contains("twice"));
        assert!(parse_gpus("a;b").is_err());
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let env = |k: &str| (k == ENV_GPUS).then(|| "2".to_string());
        let mut a = GpuArgs::default();
        assert_eq!(a.gpus(&env), Ok(Some(GpusArg::Count(2))));
        a.gpus = Some(GpusArg::None);
        assert_eq!(a.gpus(&env), Ok(None));
        let bad = |_: &str| Some("x;y".to_string());
        assert!(GpuArgs::default().gpus(&bad).unwrap_err().starts_with(ENV_GPUS));
        let unset = |_: &str| None;
        let lonely = GpuArgs { per_gpu: 4, ..GpuArgs::default() };
        assert!(lonely.gpus(&unset).unwrap_err().contains("need --gpus"));
        let off = GpuArgs { per_gpu: 4, gpus: Some(GpusArg::None), ..GpuArgs::default() };
        assert_eq!(off.gpus(&unset), Ok(None));
    }
}
