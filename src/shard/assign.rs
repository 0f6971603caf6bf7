//! Which shard each test belongs to. The plugin (`shim/pytest_abort/
//! _shard.py`) implements exactly this, so the two agree on every machine,
//! node and Python version; both are tested against the same fixed
//! expected assignments.
//!
//! - The key of a test is its node id (`--shard-by test`) or the file part
//!   of its node id, everything before the first `::` (`--shard-by file`).
//! - `hash`: shard `K = CRC-32(key as UTF-8) mod N + 1`, where CRC-32 is the
//!   IEEE 802.3 checksum that zlib, `zlib.crc32` and `binascii.crc32` compute
//!   (reflected polynomial 0xEDB88320, initial value and final xor
//!   0xFFFFFFFF). A test keeps its shard whatever else the suite holds.
//! - `duration`: a key weighs the sum of its tests' durations, in collection
//!   order; a test missing from the durations (or with a negative or
//!   non-finite value) counts as the median of the known ones (1 s when none
//!   is known). Keys are taken heaviest first (ties: the smaller key by
//!   Unicode code points) and each goes to the shard with the least load so
//!   far (ties: the lower shard). The result depends on the whole
//!   collection, which every shard collects identically.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::{ShardBy, ShardMode};

/// The key a test is assigned by: its node id, or its file's part.
pub fn key_of(nodeid: &str, by: ShardBy) -> &str {
    match by {
        ShardBy::Test => nodeid,
        ShardBy::File => nodeid.split_once("::").map_or(nodeid, |(file, _)| file),
    }
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3), the value Python's `zlib.crc32(data)` returns.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

/// The 1-based shard of `key` among `total` in `hash` mode.
pub fn shard_of(key: &str, total: u32) -> u32 {
    crc32(key.as_bytes()) % total.max(1) + 1
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty. Sorts `values`.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A duration that counts: finite and not negative (`-0.0` becomes `0.0`).
fn usable(d: Option<&f64>) -> Option<f64> {
    d.copied().filter(|d| d.is_finite() && *d >= 0.0).map(|d| d + 0.0)
}

/// The 1-based shard of every test in `nodeids` (in the same order).
pub fn assign<S: AsRef<str>>(
    nodeids: &[S],
    total: u32,
    by: ShardBy,
    mode: ShardMode,
    durations: &HashMap<String, f64>,
) -> Vec<u32> {
    match mode {
        ShardMode::Hash => {
            // One hash per key: with `file`, consecutive tests share it.
            let mut last: Option<(&str, u32)> = None;
            nodeids
                .iter()
                .map(|n| {
                    let key = key_of(n.as_ref(), by);
                    match last {
                        Some((k, s)) if k == key => s,
                        _ => {
                            let s = shard_of(key, total);
                            last = Some((key, s));
                            s
                        }
                    }
                })
                .collect()
        }
        ShardMode::Duration => {
            let of_key = balance(nodeids, total, by, durations);
            nodeids.iter().map(|n| of_key[key_of(n.as_ref(), by)]).collect()
        }
    }
}

/// Greedy duration balance: key -> 1-based shard (see the module docs).
fn balance<'a, S: AsRef<str>>(
    nodeids: &'a [S],
    total: u32,
    by: ShardBy,
    durations: &HashMap<String, f64>,
) -> HashMap<&'a str, u32> {
    let mut known: Vec<f64> = nodeids.iter().filter_map(|n| usable(durations.get(n.as_ref()))).collect();
    let fill = median(&mut known).unwrap_or(1.0);
    let mut order: Vec<&str> = Vec::new();
    let mut weight: HashMap<&str, f64> = HashMap::new();
    for n in nodeids {
        let n = n.as_ref();
        let key = key_of(n, by);
        let d = usable(durations.get(n)).unwrap_or(fill);
        match weight.get_mut(key) {
            Some(w) => *w += d,
            None => {
                order.push(key);
                weight.insert(key, d);
            }
        }
    }
    order.sort_by(|a, b| weight[b].total_cmp(&weight[a]).then_with(|| a.cmp(b)));
    // Min-heap of (load, shard index); f64 loads are finite and >= 0, so
    // their bit patterns order like the values.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = (0..total.max(1)).map(|i| Reverse((0f64.to_bits(), i))).collect();
    let mut out = HashMap::with_capacity(order.len());
    for key in order {
        let Reverse((load, i)) = heap.pop().expect("at least one shard");
        out.insert(key, i + 1);
        heap.push(Reverse(((f64::from_bits(load) + weight[key]).to_bits(), i)));
    }
    out
}
