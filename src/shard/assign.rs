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
        ShardMode::Duration => balance(nodeids, total, by, durations),
    }
}

/// Greedy duration balance: the 1-based shard of each test (see the module
/// docs). Keys are numbered in first-seen order, so every test costs two
/// hash lookups and the sort compares plain values.
fn balance<S: AsRef<str>>(nodeids: &[S], total: u32, by: ShardBy, durations: &HashMap<String, f64>) -> Vec<u32> {
    let known_of: Vec<Option<f64>> = nodeids.iter().map(|n| usable(durations.get(n.as_ref()))).collect();
    let mut known: Vec<f64> = known_of.iter().flatten().copied().collect();
    let fill = median(&mut known).unwrap_or(1.0);
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodeids.len());
    let (mut keys, mut weight): (Vec<&str>, Vec<f64>) = (Vec::new(), Vec::new());
    let mut key_of_test = Vec::with_capacity(nodeids.len());
    for (n, d) in nodeids.iter().zip(&known_of) {
        let key = key_of(n.as_ref(), by);
        let i = *index.entry(key).or_insert_with(|| {
            keys.push(key);
            weight.push(0.0);
            keys.len() - 1
        });
        weight[i] += d.unwrap_or(fill);
        key_of_test.push(i);
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| weight[b].total_cmp(&weight[a]).then_with(|| keys[a].cmp(keys[b])));
    // Min-heap of (load, shard index); f64 loads are finite and >= 0, so
    // their bit patterns order like the values.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = (0..total.max(1)).map(|i| Reverse((0f64.to_bits(), i))).collect();
    let mut shard_of_key = vec![0u32; keys.len()];
    for i in order {
        let Reverse((load, s)) = heap.pop().expect("at least one shard");
        shard_of_key[i] = s + 1;
        heap.push(Reverse(((f64::from_bits(load) + weight[i]).to_bits(), s)));
    }
    key_of_test.into_iter().map(|i| shard_of_key[i]).collect()
}
