//! The caller's allocation: the GPUs a batch system or the user already
//! gave this job through the vendor's variables. It always wins over
//! detection, so slots never land on another job's GPU.

use super::Vendor;

/// What the caller's variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Whose variables.
    pub vendor: Vendor,
    /// The GPUs, as the variable names them (may be empty: the job was
    /// given no GPU).
    pub gpus: Vec<String>,
    /// The variables read, in words (`CUDA_VISIBLE_DEVICES=5,7`).
    pub source: String,
}

/// Splits a `*_VISIBLE_DEVICES` value: comma-separated ids or UUIDs. An
/// empty value, `-1` or `NoDevFiles` means no device.
fn split(value: &str) -> Vec<String> {
    let ids: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if ids.iter().any(|id| id == "-1" || id.eq_ignore_ascii_case("NoDevFiles")) {
        return Vec::new();
    }
    ids
}

/// The caller's allocation for `vendor` (`None`: either), from `env`;
/// `None` when the caller set none of the variables. AMD: ROCR_VISIBLE_DEVICES
/// holds physical ids; HIP_VISIBLE_DEVICES picks among them by index (or
/// names physical ids itself when ROCR_VISIBLE_DEVICES is unset); HIP also
/// honours CUDA_VISIBLE_DEVICES, read last. Without a vendor, ROCR/HIP
/// mean AMD and CUDA_VISIBLE_DEVICES means NVIDIA.
pub fn allocation(vendor: Option<Vendor>, env: &dyn Fn(&str) -> Option<String>) -> Option<Allocation> {
    let get = |k: &str| env(k).map(|v| v.trim().to_string());
    let (rocr, hip, cuda) = (get("ROCR_VISIBLE_DEVICES"), get("HIP_VISIBLE_DEVICES"), get("CUDA_VISIBLE_DEVICES"));
    let amd = match (&rocr, &hip) {
        (Some(r), Some(h)) => {
            let physical = split(r);
            let picked: Option<Vec<String>> =
                split(h).iter().map(|i| i.parse::<usize>().ok().and_then(|i| physical.get(i).cloned())).collect();
            // HIP indexes that are not indexes into ROCR's list: take ROCR's.
            let gpus = picked.unwrap_or(physical);
            Some(Allocation {
                vendor: Vendor::Amd,
                gpus,
                source: format!("ROCR_VISIBLE_DEVICES={r} with HIP_VISIBLE_DEVICES={h}"),
            })
        }
        (Some(r), None) => {
            Some(Allocation { vendor: Vendor::Amd, gpus: split(r), source: format!("ROCR_VISIBLE_DEVICES={r}") })
        }
        (None, Some(h)) => {
            Some(Allocation { vendor: Vendor::Amd, gpus: split(h), source: format!("HIP_VISIBLE_DEVICES={h}") })
        }
        (None, None) => None,
    };
    let by_cuda = |vendor| {
        cuda.as_ref().map(|c| Allocation { vendor, gpus: split(c), source: format!("CUDA_VISIBLE_DEVICES={c}") })
    };
    match vendor {
        Some(Vendor::Nvidia) => by_cuda(Vendor::Nvidia),
        Some(Vendor::Amd) => amd.or_else(|| by_cuda(Vendor::Amd)),
        None => amd.or_else(|| by_cuda(Vendor::Nvidia)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn cuda_ids_and_uuids_are_taken_as_given() {
        let a = allocation(None, &env(&[("CUDA_VISIBLE_DEVICES", "5,7")])).unwrap();
        assert_eq!((a.vendor, a.gpus.clone()), (Vendor::Nvidia, vec!["5".to_string(), "7".to_string()]));
        let u = allocation(Some(Vendor::Nvidia), &env(&[("CUDA_VISIBLE_DEVICES", "GPU-aa, GPU-bb")])).unwrap();
        assert_eq!(u.gpus, vec!["GPU-aa", "GPU-bb"]);
    }

    #[test]
    fn an_empty_allocation_is_no_gpu() {
        for v in ["", "-1", "NoDevFiles"] {
            assert!(allocation(None, &env(&[("CUDA_VISIBLE_DEVICES", v)])).unwrap().gpus.is_empty(), "{v:?}");
        }
        assert_eq!(allocation(None, &env(&[])), None);
    }

    #[test]
    fn amd_hip_picks_among_rocr_by_index() {
        let a = allocation(None, &env(&[("ROCR_VISIBLE_DEVICES", "4,5,6,7"), ("HIP_VISIBLE_DEVICES", "1,3")])).unwrap();
        assert_eq!((a.vendor, a.gpus), (Vendor::Amd, vec!["5".to_string(), "7".to_string()]));
        let h = allocation(Some(Vendor::Amd), &env(&[("HIP_VISIBLE_DEVICES", "2,3")])).unwrap();
        assert_eq!(h.gpus, vec!["2", "3"]);
        let c = allocation(Some(Vendor::Amd), &env(&[("CUDA_VISIBLE_DEVICES", "1")])).unwrap();
        assert_eq!((c.vendor, c.gpus), (Vendor::Amd, vec!["1".to_string()]));
        // NVIDIA asked for: the AMD variables are not NVIDIA's allocation.
        assert_eq!(allocation(Some(Vendor::Nvidia), &env(&[("ROCR_VISIBLE_DEVICES", "0")])), None);
    }
}
