//! The duplicate filter: an `event_id` seen within the window is dropped before it reaches
//! ClickHouse, so rollups (materialized views) never count an event twice.
//!
//! Keys are 64-bit hashes with a per-process random seed (the chance that a new event collides
//! with one of 4 million stored ones is about 2e-13). Entries carry their ingestion second and
//! expire after the window; at start-up the filter is refilled from ClickHouse with what was
//! ingested within the window, so a redelivery after a crash is still recognised.

use std::collections::HashMap;
use std::hash::BuildHasher;

use tripline_core::event::EventKind;
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub struct DedupFilter {
    seed: u64,
    /// Hash of (kind, event_id) → ingestion time in seconds.
    seen: HashMap<u64, u32, IdentityHasher>,
    window_s: u32,
    max_entries: usize,
    last_sweep_s: u32,
}

impl DedupFilter {
    pub fn new(window_s: u32, max_entries: usize) -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new()
                .hash_one(0x0072_6970_6c69_6e65_u64),
            seen: HashMap::with_hasher(IdentityHasher),
            window_s,
            max_entries,
            last_sweep_s: 0,
        }
    }

    fn key(&self, kind: EventKind, event_id: &str) -> u64 {
        let kind_seed = match kind {
            EventKind::Gateway => self.seed,
            EventKind::Provider => self.seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        };
        xxh3_64_with_seed(event_id.as_bytes(), kind_seed)
    }

    /// Records the event; `false` when it was already seen within the window.
    pub fn first_sighting(&mut self, kind: EventKind, event_id: &str, now_s: u32) -> bool {
        self.maybe_sweep(now_s);
        let key = self.key(kind, event_id);
        match self.seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry)
                if now_s.saturating_sub(*entry.get()) <= self.window_s =>
            {
                false
            }
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                entry.insert(now_s);
                true
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(now_s);
                true
            }
        }
    }

    /// Refills the filter with an event already stored, ingested at `ingested_s`.
    pub fn remember(&mut self, kind: EventKind, event_id: &str, ingested_s: u32) {
        let key = self.key(kind, event_id);
        let entry = self.seen.entry(key).or_insert(ingested_s);
        *entry = (*entry).max(ingested_s);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Drops expired entries every tenth of a window, and the oldest ones when over capacity
    /// (shrinking the effective window rather than growing without bound).
    fn maybe_sweep(&mut self, now_s: u32) {
        let over_capacity = self.seen.len() >= self.max_entries;
        if !over_capacity && now_s.saturating_sub(self.last_sweep_s) < self.window_s / 10 {
            return;
        }
        self.last_sweep_s = now_s;
        let mut cutoff = now_s.saturating_sub(self.window_s);
        self.seen.retain(|_, seen| *seen >= cutoff);
        while self.seen.len() >= self.max_entries {
            let before = self.seen.len();
            cutoff += (now_s.saturating_sub(cutoff) / 2).max(1);
            self.seen.retain(|_, seen| *seen >= cutoff);
            metrics::counter!(crate::metrics::DEDUP_EVICTED)
                .increment((before - self.seen.len()) as u64);
            if cutoff >= now_s {
                self.seen.clear();
            }
        }
        metrics::gauge!(crate::metrics::DEDUP_ENTRIES).set(self.seen.len() as f64);
    }
}

/// The keys are already uniform hashes: hashing them again would only cost time.
#[derive(Clone, Copy, Default)]
struct IdentityHasher;

impl BuildHasher for IdentityHasher {
    type Hasher = IdentityHash;
    fn build_hasher(&self) -> IdentityHash {
        IdentityHash(0)
    }
}

struct IdentityHash(u64);

impl std::hash::Hasher for IdentityHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_duplicates() {
        let mut filter = DedupFilter::new(100, 1_000);
        assert!(filter.first_sighting(EventKind::Gateway, "e1", 1_000));
        assert!(!filter.first_sighting(EventKind::Gateway, "e1", 1_050));
        // Same id in the other topic is a different event.
        assert!(filter.first_sighting(EventKind::Provider, "e1", 1_050));
        // Past the window it counts again (it is no longer comparable with what is stored).
        assert!(filter.first_sighting(EventKind::Gateway, "e1", 1_200));
    }

    #[test]
    fn remembered_events_are_duplicates() {
        let mut filter = DedupFilter::new(100, 1_000);
        filter.remember(EventKind::Gateway, "stored", 990);
        assert!(!filter.first_sighting(EventKind::Gateway, "stored", 1_000));
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut filter = DedupFilter::new(100, 1_000);
        for i in 0..50 {
            filter.first_sighting(EventKind::Gateway, &format!("old-{i}"), 1_000);
        }
        filter.first_sighting(EventKind::Gateway, "new", 1_200);
        assert_eq!(filter.len(), 1);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut filter = DedupFilter::new(1_000_000, 100);
        for i in 0..10_000u32 {
            filter.first_sighting(EventKind::Gateway, &format!("e{i}"), 1_000 + i);
            assert!(filter.len() <= 100);
        }
        // The newest events are the ones kept.
        assert!(!filter.first_sighting(EventKind::Gateway, "e9999", 11_000));
    }
}
