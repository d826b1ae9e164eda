//! How the engine reaches a key's state: by a 128-bit digest of its id, not by the id itself.
//!
//! A cycle looks a key up once per row and phase (hundreds of thousands of times at 100,000
//! keys). With `String` keys each hit was confirmed by comparing the row's id with the map's
//! copy, a separate allocation that is rarely in cache: a quarter of a cycle's CPU went to that
//! `memcmp` (BENCHMARKS.md, "Detectors: scale"). A digest compares in the table itself and
//! needs no copy of the id. xxh3-128: two of a billion distinct ids share a digest with
//! probability about 2^-69, far below any other way a key's state could be wrong. Seeded at
//! random per process, so that ids a client could choose (a gateway's own key names) cannot
//! be crafted offline to share a key's state.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::data::CycleData;

/// This process's seed: digests are never stored or sent, only compared within the process.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| RandomState::new().hash_one(0u8))
}

/// An API key id as the engine's maps know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyId(u128);

impl KeyId {
    pub(crate) fn of(api_key_id: &str) -> Self {
        Self(xxh3_128_with_seed(api_key_id.as_bytes(), seed()))
    }
}

impl Hash for KeyId {
    /// Already a uniform hash: its low half is enough for the table.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 as u64);
    }
}

/// The key each of a cycle's rows names, digested once per cycle and shared by every phase
/// (each used to digest its rows again: a twentieth of a cycle's CPU). Parallel to the rows of
/// `CycleData::keys`, `usage` and `retries`.
pub(crate) struct CycleIds {
    pub keys: Vec<KeyId>,
    pub usage: Vec<KeyId>,
    pub retries: Vec<KeyId>,
}

impl CycleIds {
    pub(crate) fn of(data: &CycleData) -> Self {
        Self {
            keys: data.keys.iter().map(|r| KeyId::of(&r.api_key_id)).collect(),
            usage: data
                .usage
                .iter()
                .map(|u| KeyId::of(&u.api_key_id))
                .collect(),
            retries: data
                .retries
                .iter()
                .map(|r| KeyId::of(&r.api_key_id))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_meet_and_different_ids_do_not() {
        assert_eq!(KeyId::of("key-1"), KeyId::of(&String::from("key-1")));
        assert_ne!(KeyId::of("key-1"), KeyId::of("key-2"));
        assert_ne!(KeyId::of(""), KeyId::of("\0"));
    }
}
