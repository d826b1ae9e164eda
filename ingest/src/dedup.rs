//! The duplicate filter: a redelivered event (the same `event_id` with the same content) seen
//! within the window is dropped before it reaches ClickHouse, so rollups (materialized views)
//! never count an event twice.
//!
//! An `event_id` is not an identity on its own (clients can set it; two gateways may both
//! number from 1), so entries also hold the event's content digest
//! ([`tripline_core::event::Event::digest`]). A repeated id with a different digest is a
//! *collision*: a different event, stored and counted like any other.
//!
//! Keys are 64-bit hashes with a per-process random seed (the chance that a new event collides
//! with one of 4 million stored ones is about 2e-13). Entries carry their ingestion second and
//! expire after the window; at start-up the filter is refilled from ClickHouse with what was
//! ingested within the window, so a redelivery after a crash is still recognised.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher;

use tripline_core::event::EventKind;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What the filter makes of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// Not seen within the window: store it.
    First,
    /// The same event again (same id and content): drop it.
    Duplicate,
    /// A different event with an id already seen: store it, and count the collision.
    Collision,
}

/// The digest of rows stored before migration 5 added the column.
const LEGACY_DIGEST: u64 = 0;

#[derive(Debug, Clone, Copy)]
struct Seen {
    digest: u64,
    at_s: u32,
}

pub struct DedupFilter {
    seed: u64,
    /// Hash of (kind, event_id) → the first event seen with that id.
    seen: HashMap<u64, Seen, IdentityHasher>,
    /// Hash of (kind, event_id, digest) → ingestion second, for the other events that share an
    /// id with one in `seen`. Empty unless ids collide.
    others: HashMap<u64, u32, IdentityHasher>,
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
            others: HashMap::with_hasher(IdentityHasher),
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

    fn other_key(key: u64, digest: u64) -> u64 {
        xxh3_64_with_seed(&digest.to_le_bytes(), key)
    }

    /// Records the event and says whether it is new, a redelivery, or a colliding id.
    pub fn sight(&mut self, kind: EventKind, event_id: &str, digest: u64, now_s: u32) -> Sighting {
        self.maybe_sweep(now_s);
        let key = self.key(kind, event_id);
        let window_s = self.window_s;
        let within = |at_s: u32| now_s.saturating_sub(at_s) <= window_s;
        let first = self
            .seen
            .get(&key)
            .copied()
            .filter(|seen| within(seen.at_s));
        match first {
            // Rows stored before digests existed read 0: compared by id alone, as they were.
            Some(first) if first.digest == digest || first.digest == LEGACY_DIGEST => {
                return Sighting::Duplicate;
            }
            Some(_) => {}
            None => {
                self.seen.insert(
                    key,
                    Seen {
                        digest,
                        at_s: now_s,
                    },
                );
            }
        }
        // Either another event holds the id, or the id's first event has expired: this one
        // may still be a redelivery of an event that collided with it.
        match self.others.entry(Self::other_key(key, digest)) {
            Entry::Occupied(entry) if within(*entry.get()) => Sighting::Duplicate,
            Entry::Occupied(mut entry) if first.is_some() => {
                entry.insert(now_s);
                Sighting::Collision
            }
            Entry::Vacant(entry) if first.is_some() => {
                entry.insert(now_s);
                Sighting::Collision
            }
            Entry::Occupied(_) | Entry::Vacant(_) => Sighting::First,
        }
    }

    /// Refills the filter with an event already stored, ingested at `ingested_s`.
    pub fn remember(&mut self, kind: EventKind, event_id: &str, digest: u64, ingested_s: u32) {
        let key = self.key(kind, event_id);
        match self.seen.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(Seen {
                    digest,
                    at_s: ingested_s,
                });
            }
            Entry::Occupied(mut entry) if entry.get().digest == digest => {
                let seen = entry.get_mut();
                seen.at_s = seen.at_s.max(ingested_s);
            }
            Entry::Occupied(_) => {
                let at = self
                    .others
                    .entry(Self::other_key(key, digest))
                    .or_insert(ingested_s);
                *at = (*at).max(ingested_s);
            }
        }
    }

    /// Forgets everything (a restarted ingest refills it from what ClickHouse holds).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.others.clear();
    }

    pub fn len(&self) -> usize {
        self.seen.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.others.is_empty()
    }

    /// Drops expired entries every tenth of a window, and the oldest ones when over capacity
    /// (shrinking the effective window rather than growing without bound).
    fn maybe_sweep(&mut self, now_s: u32) {
        let over_capacity = self.len() >= self.max_entries;
        if !over_capacity && now_s.saturating_sub(self.last_sweep_s) < self.window_s / 10 {
            return;
        }
        self.last_sweep_s = now_s;
        let mut cutoff = now_s.saturating_sub(self.window_s);
        self.retain_since(cutoff);
        while self.len() >= self.max_entries {
            let before = self.len();
            cutoff += (now_s.saturating_sub(cutoff) / 2).max(1);
            self.retain_since(cutoff);
            metrics::counter!(crate::metrics::DEDUP_EVICTED)
                .increment((before - self.len()) as u64);
            if cutoff >= now_s {
                self.seen.clear();
                self.others.clear();
            }
        }
        metrics::gauge!(crate::metrics::DEDUP_ENTRIES).set(self.len() as f64);
    }

    fn retain_since(&mut self, cutoff: u32) {
        self.seen.retain(|_, seen| seen.at_s >= cutoff);
        self.others.retain(|_, at| *at >= cutoff);
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
    use Sighting::*;

    const G: EventKind = EventKind::Gateway;

    #[test]
    fn repeats_within_the_window_are_duplicates() {
        let mut filter = DedupFilter::new(100, 1_000);
        assert_eq!(filter.sight(G, "e1", 7, 1_000), First);
        assert_eq!(filter.sight(G, "e1", 7, 1_050), Duplicate);
        // Same id in the other topic is a different event.
        assert_eq!(filter.sight(EventKind::Provider, "e1", 7, 1_050), First);
        // Past the window it counts again (it is no longer comparable with what is stored).
        assert_eq!(filter.sight(G, "e1", 7, 1_200), First);
    }

    #[test]
    fn a_shared_id_with_other_content_is_a_collision_not_a_duplicate() {
        let mut filter = DedupFilter::new(100, 1_000);
        assert_eq!(filter.sight(G, "evt-1", 1, 1_000), First);
        assert_eq!(filter.sight(G, "evt-1", 2, 1_001), Collision);
        assert_eq!(filter.sight(G, "evt-1", 3, 1_002), Collision);
        // Redeliveries of any of the three are still recognised.
        assert_eq!(filter.sight(G, "evt-1", 1, 1_010), Duplicate);
        assert_eq!(filter.sight(G, "evt-1", 2, 1_010), Duplicate);
        assert_eq!(filter.sight(G, "evt-1", 3, 1_010), Duplicate);
        assert_eq!(filter.len(), 3);
    }

    #[test]
    fn remembered_events_are_duplicates_and_others_collide() {
        let mut filter = DedupFilter::new(100, 1_000);
        filter.remember(G, "stored", 5, 990);
        filter.remember(G, "stored", 6, 991);
        assert_eq!(filter.sight(G, "stored", 5, 1_000), Duplicate);
        assert_eq!(filter.sight(G, "stored", 6, 1_000), Duplicate);
        assert_eq!(filter.sight(G, "stored", 9, 1_000), Collision);
    }

    #[test]
    fn a_colliding_event_outlives_the_expired_first_one() {
        let mut filter = DedupFilter::new(100, 1_000_000);
        assert_eq!(filter.sight(G, "evt-1", 1, 1_000), First);
        assert_eq!(filter.sight(G, "evt-1", 2, 1_090), Collision);
        // The first has expired (not yet swept); the second is still within its window.
        assert_eq!(filter.sight(G, "evt-1", 2, 1_150), Duplicate);
    }

    #[test]
    fn rows_stored_without_a_digest_match_by_id() {
        let mut filter = DedupFilter::new(100, 1_000);
        filter.remember(G, "old", LEGACY_DIGEST, 990);
        assert_eq!(filter.sight(G, "old", 12_345, 1_000), Duplicate);
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut filter = DedupFilter::new(100, 1_000);
        for i in 0..50 {
            filter.sight(G, &format!("old-{i}"), 1, 1_000);
            filter.sight(G, &format!("old-{i}"), 2, 1_000);
        }
        assert_eq!(filter.len(), 100);
        filter.sight(G, "new", 1, 1_200);
        assert_eq!(filter.len(), 1);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut filter = DedupFilter::new(1_000_000, 100);
        for i in 0..10_000u32 {
            filter.sight(G, &format!("e{i}"), u64::from(i % 3) + 1, 1_000 + i);
            filter.sight(G, &format!("e{i}"), 99, 1_000 + i);
            assert!(filter.len() <= 100);
        }
        // The newest events are the ones kept.
        assert_eq!(filter.sight(G, "e9999", 1, 11_000), Duplicate);
    }
}
