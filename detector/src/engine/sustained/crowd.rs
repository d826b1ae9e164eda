//! How busy the other keys are ([`Crowd`]): the factor a key's expectation is scaled by, so that
//! a key doing what everyone does (a daily peak, a burst of the traffic's own rhythm) is not its
//! own incident. Read per minute from the keys the engine tracks: the median of their rises
//! against their usual for the hour ([`UsualByHour`]) and against what they sent half an hour
//! to an hour ago (their [`Reference`]s).

use tripline_core::models::seasonal::{hour_of_week, Seasonal};
use tripline_core::models::spend::SpendParams;

use super::rhythm;
use crate::data::KeyMinute;
use crate::engine::{CycleData, Engine, FxMap, KeyState};

/// How busy the other keys are, minute by minute: the median of their rises ([`Rises`]),
/// against their usual and against their reference. The factors a key's expectations are
/// scaled by (never below 1, so a quiet crowd does not make anyone suspect).
///
/// A median, not a ratio of sums: in a gateway of forty keys, the few under incidents of their
/// own (x3-x10 each, a key's ordinary bursts of x3 besides) moved the sum by half (x1.45-1.6
/// where the median key rose x1.25, DEV seed 1), and hid a ramp on another key behind them.
/// When everyone runs at x2 (a daily peak), the median key does too. Ids the engine has never
/// accepted add nothing, and the key judged is left out of its own crowd. With fewer than
/// [`Crowd::MIN_USUAL`] usual requests a minute among the others there is no crowd to speak
/// of, and the factor is 1.
pub(in crate::engine) struct Crowd {
    /// Per minute: the keys' rises against their usual, and against their reference.
    minutes: FxMap<u32, (Rises, Rises)>,
}

/// How busy the other keys are in a minute (never below 1): against their usual, and against
/// their reference, which a rise of everyone's traffic over the last hour (a daily peak
/// building) has not taught. A key is judged against its usual times the first, and against
/// its [`Reference`] times the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crowding {
    pub usual: f64,
    pub reference: f64,
}

impl Crowding {
    /// A key judged alone (the console's chart of one key).
    pub const ALONE: Crowding = Crowding {
        usual: 1.0,
        reference: 1.0,
    };
}

/// Every tracked key's usual requests a minute, its daily rhythm included, as weights in the
/// crowd ([`crowd_weight`]), summed for each of the 24 hours after the last fold (indexed by hour
/// of the day). The crowd is judged against
/// what it usually does at that hour: at an hour when most keys sleep, the others' usual
/// without their rhythm would be far above what they send, and a crowd at twice its usual
/// for the hour (a daily peak) would look quiet.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::engine) struct UsualByHour([f64; 24]);

impl UsualByHour {
    /// Adds a key with `usual` deseasonalised requests a minute and hour-of-day factors
    /// `season`, for the 24 hours from `from_s`.
    pub(in crate::engine) fn add(
        &mut self,
        usual: f64,
        season: Option<&Seasonal>,
        params: &SpendParams,
        from_s: u32,
    ) {
        if season.is_none() {
            self.0
                .iter_mut()
                .for_each(|total| *total += crowd_weight(usual));
            return;
        }
        for hour in 0..24u32 {
            let at = from_s + hour * 3600;
            let how = hour_of_week(i64::from(at) * 1000);
            self.0[(at / 3600 % 24) as usize] += crowd_weight(usual * rhythm(season, params, how));
        }
    }

    fn at(&self, minute: u32) -> f64 {
        self.0[(minute / 3600 % 24) as usize]
    }
}

impl Crowd {
    const MIN_USUAL: f64 = 10.0;

    /// The crowd over `data`'s minutes from `from`, as of `now_s` (a minute still open counts
    /// for the share of it elapsed), against every key's usual and reference as of the last
    /// fold. Empty (a factor of 1) when the sustained rule is off.
    pub(in crate::engine) fn new(
        engine: &Engine,
        data: &CycleData,
        known: &[Option<&KeyState>],
        from: u32,
        now_s: u32,
    ) -> Crowd {
        if !engine.config.spend_spike.sustained.enabled {
            return Crowd {
                minutes: FxMap::default(),
            };
        }
        // Ids the engine does not track yet add nothing: a spray of new (or refused) ids must
        // not make the crowd look busy and hide every key's rise.
        let mut keys: FxMap<u32, Vec<(u64, f64, f64)>> = FxMap::default();
        for (row, state) in Engine::unfolded(data, known, from) {
            keys.entry(row.minute).or_default().push((
                billable(row),
                state.usual_requests_at(&engine.spend_params, row.minute),
                state.sustained.reference_requests(),
            ));
        }
        let minutes = keys
            .into_iter()
            .map(|(minute, keys)| {
                let elapsed = elapsed_share(minute, now_s);
                let against_usual = Rises::new(
                    keys.iter().map(|k| (k.0, k.1)),
                    engine.usual_requests.at(minute),
                    elapsed,
                );
                let against_reference = Rises::new(
                    keys.iter().map(|k| (k.0, k.2)),
                    engine.reference_requests,
                    elapsed,
                );
                (minute, (against_usual, against_reference))
            })
            .collect();
        Crowd { minutes }
    }

    /// The factors for the key of `row`, as [`Crowd::new`] counted it.
    pub(in crate::engine) fn for_key(
        &self,
        row: &KeyMinute,
        state: &KeyState,
        params: &SpendParams,
    ) -> Crowding {
        self.factors(
            row.minute,
            billable(row),
            state.usual_requests_at(params, row.minute),
            state.sustained.reference_requests(),
        )
    }

    /// The factors for a key that made `requests` in `minute`, against its `usual` for that
    /// minute's hour and the requests a minute of its `reference`.
    pub(in crate::engine) fn factors(
        &self,
        minute: u32,
        requests: u64,
        usual: f64,
        reference: f64,
    ) -> Crowding {
        let Some((against_usual, against_reference)) = self.minutes.get(&minute) else {
            return Crowding::ALONE;
        };
        Crowding {
            usual: against_usual.median_without(requests, usual),
            reference: against_reference.median_without(requests, reference),
        }
    }
}

/// The keys' rises in a minute against a baseline of theirs (usual or reference requests a
/// minute), each key weighing its baseline up to [`MAX_CROWD_WEIGHT`] requests a minute, so
/// that a key of a few requests a day does not count as much as one of dozens a minute:
/// sorted, with the weight at or below each rise. The tracked keys idle in the minute sit at a
/// rise of 0, below every other.
#[derive(Debug)]
pub(crate) struct Rises {
    /// Each rise (the idle keys' 0 first) with the weight of the keys at or below it.
    below: Vec<(f64, f64)>,
    /// The minutes the requests were counted over (the share of one elapsed, for the
    /// engine's open minute).
    minutes: f64,
    /// The first rise with half of all the weight at or below it.
    median: usize,
}

impl Rises {
    /// The rises of `keys` (billable requests over `minutes`, baseline requests a minute)
    /// among keys whose weights ([`crowd_weight`]) add up to `all` (the others were idle).
    pub(crate) fn new(keys: impl Iterator<Item = (u64, f64)>, all: f64, minutes: f64) -> Rises {
        let mut rises: Vec<(f64, f64)> = keys
            .filter(|k| k.1 > 0.0)
            .map(|(requests, base)| (rise(requests, base, minutes), crowd_weight(base)))
            .collect();
        rises.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let active: f64 = rises.iter().map(|r| r.1).sum();
        let mut weight = (all - active).max(0.0);
        let mut below = Vec::with_capacity(rises.len() + 1);
        below.push((0.0, weight));
        for (rise, base) in rises {
            weight += base;
            below.push((rise, weight));
        }
        let half = weight / 2.0;
        let median = below.partition_point(|b| b.1 < half).min(below.len() - 1);
        Rises {
            below,
            minutes,
            median,
        }
    }

    /// The median rise of the keys other than one that made `requests` against its `base`
    /// (never below 1; 1 when the others' weights add up to less than [`Crowd::MIN_USUAL`]).
    pub(crate) fn median_without(&self, requests: u64, base: f64) -> f64 {
        let weight = if base > 0.0 { crowd_weight(base) } else { 0.0 };
        let all = self.below.last().map_or(0.0, |b| b.1);
        let others = all - weight;
        if others < Crowd::MIN_USUAL {
            return 1.0;
        }
        // Without the key, the weight below a rise is less its own from the key's place on.
        // So the others' median is the first rise with half of theirs below it if that lies
        // below the key's rise, else the first with half of theirs plus the key's own.
        let low = self.first_reaching((all - weight) / 2.0);
        let rise_of_key = if base > 0.0 {
            rise(requests, base, self.minutes)
        } else {
            0.0
        };
        let median = if low.0 < rise_of_key {
            low.0
        } else {
            self.first_reaching((all + weight) / 2.0).0
        };
        median.max(1.0)
    }

    /// The first rise with `weight` at or below it (the last if none). Searched outwards from
    /// the median: every key of a minute asks about a weight near half, and a search there
    /// stays in the cache where one over the whole minute's rises (100,000 keys) did not.
    fn first_reaching(&self, weight: f64) -> (f64, f64) {
        let below = &self.below;
        let median = self.median;
        let (lo, hi) = if below[median].1 >= weight {
            // At or before the median: widen downwards until a rise is short of it.
            let mut step = 1;
            while step <= median && below[median - step].1 >= weight {
                step *= 2;
            }
            (median.saturating_sub(step), median)
        } else {
            let mut step = 1;
            while median + step < below.len() && below[median + step].1 < weight {
                step *= 2;
            }
            (median, (median + step).min(below.len() - 1))
        };
        let i = lo + below[lo..=hi].partition_point(|b| b.1 < weight);
        below[i.min(below.len() - 1)]
    }
}

/// How much a key's rise counts in the crowd: its baseline requests a minute, up to
/// [`MAX_CROWD_WEIGHT`].
pub(crate) fn crowd_weight(base: f64) -> f64 {
    base.min(MAX_CROWD_WEIGHT)
}

/// The most a key weighs in the crowd, in requests a minute. Its rise is as precise as its
/// count up to about this (a Poisson spread of a fifth); beyond, its own burstiness bounds
/// it, and one big key must not be half the crowd: a median is then that key. On DEV seed 7, a
/// key whose reference held a batch job weighed 623 of 1,228, and the crowd read x0.12 in a
/// daily peak that had raised everyone else x1.6.
const MAX_CROWD_WEIGHT: f64 = 30.0;

/// A key's rise: its `requests`, counted over `minutes`, against its `base` requests a minute.
fn rise(requests: u64, base: f64, minutes: f64) -> f64 {
    requests as f64 / (base * minutes)
}

/// The share of `minute` elapsed at `now_s` (1 once it has ended; at least 0.05, so that the
/// first seconds of a minute are not divided by nothing).
pub(in crate::engine) fn elapsed_share(minute: u32, now_s: u32) -> f64 {
    (f64::from(now_s.saturating_sub(minute)) / 60.0).clamp(0.05, 1.0)
}

/// A minute's requests that were answered (no error of any kind): the ones a bill counts. A
/// key retrying 429s, or refused with a 401, sends more requests but not more billable ones.
pub(in crate::engine) fn billable(row: &KeyMinute) -> u64 {
    row.requests.saturating_sub(row.failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(requests, usual)` for each key, with `idle` usual requests of keys idle in the minute.
    fn rises(keys: &[(u64, f64)], idle: f64) -> Rises {
        let all = idle + keys.iter().map(|k| crowd_weight(k.1)).sum::<f64>();
        Rises::new(keys.iter().copied(), all, 1.0)
    }

    #[test]
    fn the_median_key_sets_the_crowd_not_the_sum() {
        // Ten keys at x1.2, three under incidents of their own at x6: their sum says x2.4.
        let mut keys = vec![(12, 10.0); 10];
        keys.extend([(60, 10.0); 3]);
        let crowd = rises(&keys, 0.0);
        assert_eq!(crowd.median_without(12, 10.0), 1.2);
        assert_eq!(crowd.median_without(60, 10.0), 1.2);
    }

    #[test]
    fn a_key_is_left_out_of_its_own_crowd() {
        // A large key at x3 and a smaller one at x1: each is judged by the other.
        let crowd = rises(&[(150, 50.0), (20, 20.0)], 0.0);
        assert_eq!(crowd.median_without(150, 50.0), 1.0);
        assert_eq!(crowd.median_without(20, 20.0), 3.0);
        // Ties: one of two keys alike is left out, the other stays.
        let crowd = rises(&[(60, 20.0), (60, 20.0), (10, 10.0)], 0.0);
        assert_eq!(crowd.median_without(60, 20.0), 3.0);
    }

    #[test]
    fn one_big_key_is_not_half_the_crowd() {
        // A key whose reference held a batch job, now at x0.12, and twelve keys at x1.6.
        let mut keys = vec![(72, 600.0)];
        keys.extend([(16, 10.0); 12]);
        let crowd = rises(&keys, 0.0);
        assert_eq!(crowd.median_without(16, 10.0), 1.6);
    }

    #[test]
    fn a_daily_peak_is_everyones_rise() {
        let keys: Vec<(u64, f64)> = (1..=20).map(|n| (2 * n, n as f64)).collect();
        let crowd = rises(&keys, 0.0);
        assert_eq!(crowd.median_without(20, 10.0), 2.0);
    }

    #[test]
    fn idle_keys_are_at_no_rise_and_a_lone_crowd_is_none() {
        // Most of the usual is idle this minute: the median key sent nothing.
        let crowd = rises(&[(30, 10.0), (40, 10.0)], 60.0);
        assert_eq!(crowd.median_without(0, 10.0), 1.0);
        assert_eq!(crowd.median_without(30, 10.0), 1.0);
        // An idle key left out of a crowd that is busy without it.
        let crowd = rises(&[(30, 10.0), (40, 10.0)], 10.0);
        assert_eq!(crowd.median_without(0, 10.0), 3.0);
        // Under ten usual requests a minute among the others: no crowd.
        let crowd = rises(&[(300, 100.0), (27, 9.0)], 0.0);
        assert_eq!(crowd.median_without(300, 100.0), 1.0);
    }
}
