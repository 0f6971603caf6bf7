//! Duplicate-key detection for the fast pass: Python keeps the last value
//! of a repeated key at the first key's place, which only the full parse
//! reproduces, so the fast pass must notice repeats. Keys are hashed (a
//! collision only sends the blob to the full parse); a short list holds an
//! object's first keys, a hash set the rest.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Identity hasher for the already-hashed keys of an object.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keys of one object seen so far: a short list, a hash set past 16.
#[derive(Default)]
pub(super) struct KeySet {
    few: Vec<u64>,
    many: HashSet<u64, BuildHasherDefault<IdHasher>>,
}

impl KeySet {
    pub(super) fn clear(&mut self) {
        self.few.clear();
        if !self.many.is_empty() {
            self.many.clear();
        }
    }

    /// False when `h` was there already.
    pub(super) fn insert(&mut self, h: u64) -> bool {
        if self.few.len() < 16 {
            if self.few.contains(&h) {
                return false;
            }
            self.few.push(h);
            return true;
        }
        if self.many.is_empty() {
            self.many.extend(self.few.iter().copied());
        }
        self.many.insert(h)
    }
}

/// A hash of a key (foldhash with a fixed seed: fast on short keys and
/// well mixed, so keys that differ in a digit or two, as parametrized node
/// ids do, hash apart; a collision would only send the blob to the full
/// parse).
pub(super) fn key_hash(b: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x517c_c1b7_2722_0a95).hash_one(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_repeat_and_hash_apart() {
        assert_ne!(key_hash(b"ab"), key_hash(b"ba"));
        let mut k = KeySet::default();
        for i in 0..40u64 {
            assert!(k.insert(key_hash(format!("key{i}").as_bytes())));
        }
        assert!(!k.insert(key_hash(b"key3")) && !k.insert(key_hash(b"key33")));
        k.clear();
        assert!(k.insert(key_hash(b"key3")));
    }

    /// Parametrized node ids that differ only in a few digits hash apart
    /// (the old per-byte tail hash gave 100 false repeats among these 5,000,
    /// which sent every real pytest-html report of that shape to the full
    /// parse: the sanitizer ran 6x slower).
    #[test]
    fn parametrized_ids_hash_apart() {
        let mut k = KeySet::default();
        for m in 0..5 {
            for i in 0..1000 {
                let id = format!(
                    "bench-out/work/reports-5000/suite/tests/test_generated_module_{m:03}.py::TestKernels::test_matmul_dtype_float32[{}]",
                    m * 1000 + i
                );
                assert!(k.insert(key_hash(id.as_bytes())), "{id}");
            }
        }
    }
}
