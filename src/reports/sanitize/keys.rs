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

/// A quick hash of a key, eight bytes at a time (collisions only send the
/// blob to the full parse).
pub(super) fn key_hash(b: &[u8]) -> u64 {
    const K: u64 = 0x517cc1b727220a95;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &x in chunks.remainder() {
        h = (h.rotate_left(5) ^ x as u64).wrapping_mul(K);
    }
    h ^ (h >> 29)
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
}
