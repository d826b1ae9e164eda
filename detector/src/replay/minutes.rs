//! What a minute-by-minute replay needs beyond the rows of each minute: the key-scanning
//! candidates and the budget sums that the live worker reads with queries of their own over
//! trailing windows, rebuilt here from one read per chunk of minutes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::data::{AuthFailures, BudgetUse, CycleData, ScanCandidate};

const MINUTE: u32 = 60;
/// The live scan query looks at the minute and the four before it.
const SCAN_MINUTES: u32 = 5;

/// Splits rows read for many minutes into one `CycleData` per minute.
pub fn split_by_minute(data: CycleData) -> BTreeMap<u32, CycleData> {
    let mut out: BTreeMap<u32, CycleData> = BTreeMap::new();
    macro_rules! spread {
        ($field:ident) => {
            for row in data.$field {
                out.entry(row.minute).or_default().$field.push(row);
            }
        };
    }
    spread!(keys);
    spread!(usage);
    spread!(users);
    spread!(retries);
    spread!(projects);
    spread!(overall);
    spread!(providers);
    spread!(key_failures);
    spread!(provider_buckets);
    spread!(provider_keys);
    spread!(provider_chains);
    // The live worker reads the provider buckets of the minute before too (a storm with
    // backoff is judged over 90 s).
    let previous: Vec<_> = out
        .iter()
        .filter_map(|(&minute, d)| {
            out.get(&(minute + MINUTE))
                .map(|_| (minute + MINUTE, d.provider_buckets.clone()))
        })
        .collect();
    for (minute, buckets) in previous {
        if let Some(d) = out.get_mut(&minute) {
            d.provider_buckets.splice(0..0, buckets);
        }
    }
    out
}

/// Key scanning at minute `minute`: IPs failing authentication on at least `min_keys` keys over
/// that minute and the four before it, as the live query counts them.
pub fn scans_at(failures: &[AuthFailures], minute: u32, min_keys: u64) -> Vec<ScanCandidate> {
    let from = minute.saturating_sub((SCAN_MINUTES - 1) * MINUTE);
    let mut per_ip: HashMap<&str, (HashSet<&str>, ScanCandidate)> = HashMap::new();
    for f in failures
        .iter()
        .filter(|f| f.minute >= from && f.minute <= minute)
    {
        let (keys, scan) = per_ip.entry(&f.client_ip).or_insert_with(|| {
            (
                HashSet::new(),
                ScanCandidate {
                    client_ip: f.client_ip.clone(),
                    first_ms: i64::MAX,
                    last_ms: i64::MIN,
                    ..ScanCandidate::default()
                },
            )
        });
        keys.insert(&f.api_key_id);
        scan.requests += f.requests;
        scan.first_ms = scan.first_ms.min(f.first_ms);
        scan.last_ms = scan.last_ms.max(f.last_ms);
    }
    let mut out: Vec<ScanCandidate> = per_ip
        .into_values()
        .filter(|(keys, _)| keys.len() as u64 >= min_keys)
        .map(|(keys, mut scan)| {
            scan.keys = keys.len() as u64;
            scan
        })
        .collect();
    out.sort_by(|a, b| a.client_ip.cmp(&b.client_ip));
    out
}

/// Each key's spend this hour, this day and over the last 60 minutes, kept up to date minute
/// by minute (the live worker asks ClickHouse each cycle).
#[derive(Debug, Default)]
pub struct BudgetSums {
    keys: HashMap<String, KeySums>,
}

#[derive(Debug, Default)]
struct KeySums {
    project: String,
    day: u32,
    day_usd: f64,
    hour: u32,
    hour_usd: f64,
    recent: VecDeque<(u32, f64)>,
}

impl BudgetSums {
    /// Adds a key's spend in `minute`. Minutes must come in order per key (`at` drops what
    /// is older than an hour from the front); an older minute than the last is ignored.
    pub fn add(&mut self, key: &str, project: &str, minute: u32, cost_usd: f64) {
        let sums = match self.keys.get_mut(key) {
            Some(sums) => sums,
            None => self.keys.entry(key.to_owned()).or_default(),
        };
        if !project.is_empty() && sums.project != project {
            sums.project = project.to_owned();
        }
        if sums.recent.back().is_some_and(|(last, _)| *last > minute) {
            return;
        }
        let (day, hour) = (minute / 86_400 * 86_400, minute / 3600 * 3600);
        if sums.day != day {
            (sums.day, sums.day_usd) = (day, 0.0);
        }
        if sums.hour != hour {
            (sums.hour, sums.hour_usd) = (hour, 0.0);
        }
        sums.day_usd += cost_usd;
        sums.hour_usd += cost_usd;
        sums.recent.push_back((minute, cost_usd));
    }

    /// The budget rows as of the end of `minute`: keys with spend today.
    pub fn at(&mut self, minute: u32) -> Vec<BudgetUse> {
        let (day, hour) = (minute / 86_400 * 86_400, minute / 3600 * 3600);
        let mut out = Vec::new();
        for (key, sums) in &mut self.keys {
            while sums
                .recent
                .front()
                .is_some_and(|(m, _)| *m + 3600 <= minute)
            {
                sums.recent.pop_front();
            }
            if sums.day != day {
                continue;
            }
            out.push(BudgetUse {
                api_key_id: key.clone(),
                project: sums.project.clone(),
                hour_usd: if sums.hour == hour {
                    sums.hour_usd
                } else {
                    0.0
                },
                day_usd: sums.day_usd,
                last_hour_usd: sums.recent.iter().map(|(_, usd)| usd).sum(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::KeyMinute;

    const T0: u32 = 1_795_651_200; // a day boundary (2026-11-26T00:00:00Z)

    #[test]
    fn rows_land_in_their_minute() {
        let data = CycleData {
            keys: [T0, T0 + 60, T0]
                .iter()
                .map(|&minute| KeyMinute {
                    minute,
                    ..KeyMinute::default()
                })
                .collect(),
            ..CycleData::default()
        };
        let split = split_by_minute(data);
        assert_eq!(split.len(), 2);
        assert_eq!(split[&T0].keys.len(), 2);
        assert_eq!(split[&(T0 + 60)].keys.len(), 1);
    }

    #[test]
    fn a_minute_carries_the_provider_buckets_of_the_minute_before() {
        let bucket = |minute: u32| crate::data::ProviderBucket {
            minute,
            bucket: minute + 50,
            ..crate::data::ProviderBucket::default()
        };
        let data = CycleData {
            provider_buckets: vec![bucket(T0), bucket(T0 + 60), bucket(T0 + 180)],
            ..CycleData::default()
        };
        let split = split_by_minute(data);
        let minutes = |m: u32| -> Vec<u32> {
            split[&m]
                .provider_buckets
                .iter()
                .map(|b| b.minute)
                .collect()
        };
        assert_eq!(minutes(T0), [T0]);
        assert_eq!(minutes(T0 + 60), [T0, T0 + 60]);
        // No rows in the minute before: nothing to carry.
        assert_eq!(minutes(T0 + 180), [T0 + 180]);
    }

    #[test]
    fn scans_count_distinct_keys_over_five_minutes() {
        let fail = |minute: u32, key: &str| AuthFailures {
            client_ip: "198.51.100.7".into(),
            minute,
            api_key_id: key.into(),
            requests: 2,
            first_ms: i64::from(minute) * 1000,
            last_ms: i64::from(minute) * 1000 + 30_000,
        };
        // Keys k0..k9 one per minute, k0 twice.
        let mut rows: Vec<_> = (0..10)
            .map(|i| fail(T0 + i * 60, &format!("k{i}")))
            .collect();
        rows.push(fail(T0 + 9 * 60, "k0"));
        // At minute 4: k0..k4 (5 keys).
        assert_eq!(scans_at(&rows, T0 + 4 * 60, 5)[0].keys, 5);
        assert!(scans_at(&rows, T0 + 4 * 60, 6).is_empty());
        // At minute 9: k5..k9 and k0 again (6 keys, 12 requests), minutes 5 to 9.
        let at9 = &scans_at(&rows, T0 + 9 * 60, 6)[0];
        assert_eq!((at9.keys, at9.requests), (6, 12));
        assert_eq!(at9.first_ms, i64::from(T0 + 5 * 60) * 1000);
    }

    #[test]
    fn budget_sums_follow_hour_day_and_the_last_hour() {
        let mut b = BudgetSums::default();
        // $1 a minute from 22:30 to 01:29 the next day.
        let start = T0 + 22 * 3600 + 30 * 60;
        for i in 0..180 {
            b.add("k", "p", start + i * 60, 1.0);
        }
        let rows = b.at(start + 179 * 60); // 01:29 on day two
        let r = &rows[0];
        assert_eq!(r.project, "p");
        assert_eq!(r.hour_usd, 30.0); // 01:00..01:29
        assert_eq!(r.day_usd, 90.0); // 00:00..01:29
        assert_eq!(r.last_hour_usd, 60.0);
        // A minute older than the last one added is ignored, not counted into this hour.
        b.add("k", "p", start, 100.0);
        assert_eq!(b.at(start + 179 * 60)[0].hour_usd, 30.0);
    }
}
