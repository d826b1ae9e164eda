//! Forgetting entities that are no longer in use, so that memory and cycle time follow the
//! keys, projects and end users in use rather than every id ever seen (every tracked key costs
//! memory and a zero-filled fold per minute).
//!
//! - Idle: a key or project unseen for `idle_evict_after_s` is forgotten. End users keep their
//!   own horizon (a day: no move is impossible after that; see travel.rs).
//! - Never tracked: a key id whose every request was refused (401/403), what a key scanner
//!   presents by the thousand (see fold.rs).
//! - Cap: beyond `max_tracked_keys` entries in one map, the young (fewer than
//!   [`ESTABLISHED_MINUTES`] active minutes) go first, then the least recently seen, down to
//!   nine tenths of the cap, so that a flood of new ids pays for the selection once in a while
//!   rather than every minute, and cannot push out the keys with a history.
//!
//! A forgotten entity that comes back is a new one: every model starts from nothing and must
//! warm up again before it may flag (the spend model's `warmup_windows`, the leaked-key rule's
//! `min_history_minutes`, the retry trend's ten minutes, a user's ten minutes). Eviction can
//! therefore delay an alert on a returning entity, never cause one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use super::*;

/// Active minutes (minutes with requests) before a key counts as established: the spend
/// model's default warm-up and the leaked-key rule's default history are both 30 minutes.
pub(super) const ESTABLISHED_MINUTES: u64 = 30;

/// Entities forgotten since the engine was created, by cause.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evictions {
    /// Unseen for longer than their idle limit.
    pub idle: u64,
    /// Dropped to keep a map under `max_tracked_keys`.
    pub cap: u64,
}

impl Engine {
    /// Forgets idle keys and projects, then enforces the cap on every per-entity map. Called
    /// after each fold, with the fold's watermark as "now" (so a replay evicts as a live worker
    /// would have).
    pub(super) fn evict(&mut self, closed_before: u32) {
        let idle = u32::try_from(self.config.idle_evict_after_s).unwrap_or(u32::MAX);
        // Idle time counts from the end of the last active minute.
        let unseen =
            |last_active: u32| closed_before.saturating_sub(last_active.saturating_add(MINUTE));
        let before = self.keys.len() + self.projects.len();
        self.keys.retain(|_, s| unseen(s.spend.last_active) < idle);
        self.projects.retain(|_, p| unseen(p.last_active) < idle);
        self.evicted.idle += (before - self.keys.len() - self.projects.len()) as u64;

        let cap = usize::try_from(self.config.max_tracked_keys).unwrap_or(usize::MAX);
        self.evicted.cap += cap_map(&mut self.keys, cap, |s| {
            (established(s), s.spend.last_active)
        });
        self.evicted.cap += cap_map(&mut self.projects, cap, |p| (true, p.last_active));
        self.evicted.cap += cap_map(&mut self.users, cap, |u| {
            let last_s = u.whereabouts.last.as_ref().map_or(0, |(_, ms)| ms / 1000);
            (
                u.minutes >= travel::USER_MIN_HISTORY_MINUTES,
                u32::try_from(last_s).unwrap_or(0),
            )
        });
    }
}

fn established(key: &KeyState) -> bool {
    key.traffic.n >= ESTABLISHED_MINUTES
}

/// Keeps `map` at most `cap` long: when over it, removes the entries of lowest rank (young
/// before established, then least recently active) down to nine tenths of the cap. Returns
/// how many it removed.
fn cap_map<K: Eq + Hash, V, S: BuildHasher>(
    map: &mut HashMap<K, V, S>,
    cap: usize,
    rank: impl Fn(&V) -> (bool, u32),
) -> u64 {
    if map.len() <= cap {
        return 0;
    }
    let keep = cap - cap / 10;
    let remove = map.len() - keep;
    let mut ranks: Vec<(bool, u32)> = map.values().map(&rank).collect();
    let threshold = *ranks.select_nth_unstable(remove - 1).1;
    // Everything ranked below the threshold goes; of those ranked equal, only as many as
    // needed to reach `remove`.
    let below = ranks.iter().filter(|r| **r < threshold).count();
    let mut equal_to_drop = remove - below;
    map.retain(|_, v| {
        let r = rank(v);
        if r < threshold {
            false
        } else if r == threshold && equal_to_drop > 0 {
            equal_to_drop -= 1;
            false
        } else {
            true
        }
    });
    remove as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_drops_young_entries_first_then_the_least_recent() {
        let mut map: HashMap<String, (bool, u32)> = HashMap::new();
        for i in 0..10u32 {
            map.insert(format!("old-{i}"), (true, i));
            map.insert(format!("young-{i}"), (false, 100 + i));
        }
        // 20 entries, cap 10: down to 9; the ten young ones go, then the oldest established.
        assert_eq!(cap_map(&mut map, 10, |v| *v), 11);
        assert_eq!(map.len(), 9);
        assert!(map.keys().all(|k| k.starts_with("old-")), "{map:?}");
        assert!(!map.contains_key("old-0"), "the least recently seen went");
        assert_eq!(cap_map(&mut map, 10, |v| *v), 0, "under the cap: nothing");
    }

    #[test]
    fn equal_ranks_are_dropped_only_as_far_as_needed() {
        let mut map: HashMap<String, (bool, u32)> =
            (0..30).map(|i| (format!("k{i}"), (false, 5))).collect();
        assert_eq!(cap_map(&mut map, 20, |v| *v), 12);
        assert_eq!(map.len(), 18);
    }

    const T0: u32 = 1_795_680_000; // a minute boundary

    fn engine(idle_s: u64, cap: u64) -> Engine {
        let config = DetectConfig {
            allowed_lateness_s: 0,
            idle_evict_after_s: idle_s,
            max_tracked_keys: cap,
            ..DetectConfig::default()
        };
        let mut engine = Engine::new(config).unwrap();
        engine.folded_through = T0;
        engine
    }

    fn minute_of(key: &str, minute: u32, cost: f64) -> KeyMinute {
        KeyMinute {
            api_key_id: key.into(),
            minute,
            project: "p".into(),
            requests: 30,
            cost_usd: cost,
            distinct_ips: 1,
            ..KeyMinute::default()
        }
    }

    /// `minutes` closed minutes from `from` of `keys` spending `cost` each, folded quietly.
    fn feed(engine: &mut Engine, keys: &[&str], from: u32, minutes: u32, cost: f64) -> u32 {
        for i in 0..minutes {
            let minute = from + i * MINUTE;
            let data = CycleData {
                keys: keys.iter().map(|k| minute_of(k, minute, cost)).collect(),
                projects: vec![crate::data::SpendMinute {
                    entity: "p".into(),
                    minute,
                    cost_usd: cost * keys.len() as f64,
                }],
                ..CycleData::default()
            };
            engine.cycle(&data, minute + MINUTE, true);
        }
        from + minutes * MINUTE
    }

    #[test]
    fn idle_keys_and_projects_are_forgotten() {
        let mut e = engine(7_200, 250_000);
        let now = feed(&mut e, &["old", "young"], T0, 5, 0.1);
        let now = feed(&mut e, &["old"], now, 40, 0.1);
        assert_eq!(e.tracked_keys(), 2, "forty minutes of silence are not idle");
        // "young" was last seen 40 minutes before `now`: it goes 80 minutes later.
        e.cycle(&CycleData::default(), now + 4_800, true);
        assert_eq!(e.tracked_keys(), 1);
        assert_eq!(e.evictions().idle, 1);
        e.cycle(&CycleData::default(), now + 7_200, true);
        assert_eq!(e.tracked_keys(), 0);
        assert_eq!(e.tracked_projects_and_users().0, 0, "its project too");
        assert_eq!(e.evictions().idle, 3);
    }

    #[test]
    fn key_ids_that_were_only_refused_are_not_tracked() {
        let mut e = engine(86_400, 250_000);
        let refused = |key: &str, minute| KeyMinute {
            auth_failures: 1,
            requests: 1,
            failures: 1,
            ..minute_of(key, minute, 0.0)
        };
        let data = CycleData {
            keys: vec![refused("guess-1", T0), refused("guess-2", T0)],
            ..CycleData::default()
        };
        e.cycle(&data, T0 + MINUTE, true);
        assert_eq!(e.tracked_keys(), 0);
        // Refused, then accepted: tracked from the accepted minute.
        let data = CycleData {
            keys: vec![
                refused("k", T0 + MINUTE),
                minute_of("k", T0 + 2 * MINUTE, 0.1),
            ],
            ..CycleData::default()
        };
        e.cycle(&data, T0 + 3 * MINUTE, true);
        assert_eq!(e.tracked_keys(), 1);
        assert_eq!(e.keys[&KeyId::of("k")].spend.last_active, T0 + 2 * MINUTE);
    }

    #[test]
    fn a_key_that_comes_back_after_eviction_is_new_and_raises_nothing_at_once() {
        // The same history and the same return, remembered and forgotten: a key idle for two
        // hours spends $25 in a minute. Remembered, its baseline (~$0.10) flags it; forgotten,
        // it is a new key warming up, and nothing is flagged.
        let mut found = Vec::new();
        for idle_s in [86_400, 3_600] {
            let mut e = engine(idle_s, 250_000);
            let now = feed(&mut e, &["k"], T0, 60, 0.1);
            let back = now + 7_200;
            e.cycle(&CycleData::default(), back, true);
            let spike = CycleData {
                keys: vec![minute_of("k", back, 25.0)],
                ..CycleData::default()
            };
            found.push(e.cycle(&spike, back + 30, false).len());
        }
        assert!(found[0] >= 1, "remembered: flagged");
        assert_eq!(found[1], 0, "forgotten: a new key, warming up");
    }

    #[test]
    fn a_spray_of_new_keys_stays_under_the_cap_and_keeps_the_established() {
        let mut e = engine(86_400, 1_000);
        let mut now = feed(&mut e, &["k"], T0, 40, 0.1);
        for round in 0..3u32 {
            let data = CycleData {
                keys: (0..800)
                    .map(|i| minute_of(&format!("spray-{round}-{i}"), now, 0.0))
                    .chain([minute_of("k", now, 0.1)])
                    .collect(),
                ..CycleData::default()
            };
            e.cycle(&data, now + MINUTE, true);
            now += MINUTE;
            assert!(e.tracked_keys() <= 1_000, "{}", e.tracked_keys());
        }
        assert!(
            e.keys.contains_key(&KeyId::of("k")),
            "the established key survives the spray"
        );
        assert!(e.evictions().cap > 0);
    }
}
