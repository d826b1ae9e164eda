//! A key's routine: what it did at this time yesterday. A sustained spend alert on a key that is
//! not clearly busier than it was at this time yesterday (`clearly_above`) is the key's day,
//! not an incident, and is spared; a rise only half certain on the key's own model pages when
//! the key is clearly at least `min_ratio` times as busy as at this time yesterday.
//!
//! The spend models know a key's daily rhythm by the hour. A key whose working day jumps x40
//! at 11:35 and falls back by 14:30 is far above its hour's factor for much of that peak, and
//! the sustained rules paged on it every day, from the second day on (DEV seeds 2 and 3: ten of
//! fourteen false spend alerts, BENCHMARKS.md). Yesterday's rows, already in ClickHouse, say it
//! directly: the busiest ten minutes within half an hour of this time 24 hours ago.
//!
//! The same rows are a second baseline, independent of the model's: a ramp is learnt into the
//! key's level and hour as it climbs, and its evidence there stays half certain while the key
//! already sends twice what it did at this time the day before ([`Cusum::half_alarm`]).
//!
//! Yesterday knew nothing of a rise of everyone's traffic since (a daily peak, a launch): every
//! comparison with yesterday is made beyond the crowd's own rise since then ([`Crowd`]), so a key
//! that is x1.7 its yesterday while all keys together are x1.75 theirs is not paged for it.
//!
//! Only the level rules are judged so (spend, requests, tokens a minute), each against the same
//! measure yesterday. A raised price per token is a move to pricier models whatever the volume,
//! and the per-minute rule and budgets are judged in dollars the user set. Yesterday is read
//! only for the few keys a rule flags, once per ten minutes per key; the crowd's rise once a
//! minute while any is flagged.
//!
//! [`Cusum::half_alarm`]: tripline_core::models::sustained::Cusum::half_alarm

use clickhouse::Client;
use rustc_hash::FxHashMap as FxMap;
use serde_json::json;
use tracing::{debug, warn};
use tripline_store::{sql_string as quote, KEY_ROLLUP_TABLE};

use crate::engine::{crowd_weight, Candidate, Rises};
use tripline_core::config::Detector;

const DAY_S: u32 = 86_400;
/// How far from this time yesterday still counts as "this time": a key's day starts a little
/// earlier or later from one day to the next.
const AROUND_S: u32 = 30 * 60;
/// Yesterday's level is its busiest block of this many seconds: a key's bursts within an hour
/// are its routine too, but not a single busy minute.
const BLOCK_S: u32 = 600;

/// A key's busiest ten minutes within half an hour of this time yesterday, per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Yesterday {
    /// Requests answered without error (what the requests rule counts).
    pub requests: f64,
    pub cost_usd: f64,
    pub tokens: f64,
}

/// How much busier the other keys are than at this time yesterday (never below 1: a quiet day
/// does not lower a bar), as a factor of yesterday's level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crowd(pub f64);

impl Crowd {
    /// Nothing known of the crowd: yesterday's levels are taken as they are.
    pub const UNKNOWN: Crowd = Crowd(1.0);
}

/// Every key's answered requests in the last closed [`BLOCK_S`] and in its busiest block within
/// [`AROUND_S`] of this time yesterday, among the keys that sent any then: a key's [`Crowd`] is
/// the median of the other keys' rises since, as the engine reads its crowd ([`Rises`]). Each
/// key on the footing the judged key's own yesterday is read on: against the same ten minutes
/// a day earlier, a gateway whose traffic swells and ebbs over half an hour (DEV seed 1: 0.65x
/// to 1.6x its yesterday within fifteen minutes, day after day at another phase) gave a crowd
/// that swung with the phase, and spared or paged a key by the minute it was judged in. A
/// median, so that a few keys under incidents of their own do not raise every key's bar (on
/// DEV seed 1, a capped sum read x1.53 and spared a ramp at x1.8 its yesterday). Read once a
/// minute, for every shard's keys alike.
#[derive(Debug)]
pub struct SinceYesterday {
    rises: Rises,
    /// Each key's answered requests in the block, and a minute's of its busiest block then.
    keys: FxMap<String, (u64, f64)>,
}

impl SinceYesterday {
    /// From rows of (key, answered requests in the block, those of its busiest block then).
    pub fn new(rows: Vec<(String, u64, f64)>) -> SinceYesterday {
        let minutes = f64::from(BLOCK_S / 60);
        let keys: FxMap<String, (u64, f64)> = rows
            .into_iter()
            .map(|(key, now, then)| (key, (now, then / minutes)))
            .collect();
        let all = keys.values().map(|k| crowd_weight(k.1)).sum();
        SinceYesterday {
            rises: Rises::new(keys.values().copied(), all, minutes),
            keys,
        }
    }

    /// The crowd `key` is judged beyond: the other keys' rise.
    pub fn without(&self, key: &str) -> Crowd {
        let (now, then) = self.keys.get(key).copied().unwrap_or((0, 0.0));
        Crowd(self.rises.median_without(now, then))
    }
}

/// How many standard errors above yesterday's level (times the crowd) a key must be to be
/// busier than then. Both levels are counts of requests that vary by chance: yesterday's one
/// ten-minute block, today's a run of a few minutes. A bare `now > then` paged DEV seed 7's
/// key-0018 in its daily burst at x1.02 its yesterday (18.1 requests a minute against 17.7,
/// 0.2 standard errors).
const CLEARLY_ABOVE_SE: f64 = 2.0;

/// The longest run [`clearly_above`] credits: a run judged by where it stands now weighs its
/// recent minutes at 0.9 a minute, about ten in all, and yesterday's block is ten too.
const RUN_MINUTES_MAX: f64 = 10.0;

/// Whether `now`, a level over a run of `minutes`, is clearly above the level `then` of one
/// [`BLOCK_S`] times `times` (the crowd's rise since, and `min_ratio` for a half-certain
/// rise): by [`CLEARLY_ABOVE_SE`] standard errors, each level's chance variation taken as
/// Poisson's for the requests behind it (`per_request`: the measure's amount per request).
/// Without a scale, or against an idle yesterday, above is above.
fn clearly_above(now: f64, minutes: f64, then: f64, times: f64, per_request: Option<f64>) -> bool {
    let Some(per_request) = per_request.filter(|p| *p > 0.0 && then > 0.0) else {
        return now > then * times;
    };
    // In requests a minute, the bar's variance is the block's, scaled by `times` twice.
    let (now, then) = (now / per_request, then / per_request);
    let minutes = minutes.clamp(1.0, RUN_MINUTES_MAX);
    let block_minutes = f64::from(BLOCK_S / 60);
    let se = (now / minutes + times * times * then / block_minutes).sqrt();
    now - then * times > CLEARLY_ABOVE_SE * se
}

/// What a level rule measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    Dollars,
    Requests,
    Tokens,
}

impl Measure {
    fn per_minute(self, level: f64) -> String {
        match self {
            Measure::Dollars => format!("${level:.4} a minute"),
            Measure::Requests => format!("{level:.1} requests a minute"),
            Measure::Tokens => format!("{level:.0} tokens a minute"),
        }
    }

    /// This measure's amount per request yesterday (None when it sent none).
    fn per_request(self, yesterday: &Yesterday) -> Option<f64> {
        let amount = match self {
            Measure::Dollars => yesterday.cost_usd,
            Measure::Requests => yesterday.requests,
            Measure::Tokens => yesterday.tokens,
        };
        (yesterday.requests > 0.0).then(|| amount / yesterday.requests)
    }
}

/// What a level rule's alert measured per minute, and the same measure yesterday.
fn levels(candidate: &Candidate, yesterday: &Yesterday) -> Option<(Measure, f64, f64)> {
    if candidate.detector != Detector::SpendSpike {
        return None;
    }
    if candidate.labels.get("measure").map(String::as_str) == Some("tokens") {
        let sustained = candidate.facts.get("rule") == Some(&json!("sustained"));
        return sustained.then_some((Measure::Tokens, candidate.observed, yesterday.tokens));
    }
    match candidate.facts.get("rule")?.as_str()? {
        "sustained" => Some((Measure::Dollars, candidate.observed, yesterday.cost_usd)),
        "sustained_requests" => Some((
            Measure::Requests,
            candidate.facts.get("requests_per_minute")?.as_f64()?,
            yesterday.requests,
        )),
        _ => None,
    }
}

/// Whether a level rule flagged this candidate (it may be spared by yesterday's level).
fn judged_by_level(candidate: &Candidate) -> bool {
    levels(candidate, &Yesterday::default()).is_some()
}

/// Drops the level rules' candidates whose key is not clearly busier than at this time
/// yesterday ([`clearly_above`]), and the half-certain ones (fact `confirm = yesterday`) whose
/// key is not clearly `min_ratio` times as busy as then, or, with the candidate's fact
/// `confirm_ratio`, at least that many times (or whose yesterday is unknown or idle);
/// yesterday's level counts times the `crowd`'s rise since. Notes yesterday's level on those
/// kept (fact `yesterday_per_minute`, and in the summary when the key was busy at all) and the
/// crowd's rise (fact `crowd_since_yesterday`). Returns how many were dropped. `crowd`: the
/// others' rise since for a key; `yesterday`: the key's level, None when not known.
pub fn judge(
    candidates: &mut Vec<Candidate>,
    min_ratio: f64,
    crowd: impl Fn(&str) -> Crowd,
    yesterday: impl Fn(&str) -> Option<Yesterday>,
) -> usize {
    let before = candidates.len();
    candidates.retain_mut(|c| {
        let half = c.facts.get("confirm") == Some(&json!("yesterday"));
        let Some(key) = c.api_key_id() else {
            return !half;
        };
        let Some(day) = yesterday(key) else {
            return !half;
        };
        let crowd = crowd(key);
        let Some((measure, now, then)) = levels(c, &day) else {
            return !half;
        };
        let crowd_factor = crowd.0.max(1.0);
        let minutes = c.facts.get("minutes").and_then(|m| m.as_f64()).unwrap_or(1.0);
        let per_request = measure.per_request(&day);
        let above = clearly_above(now, minutes, then, crowd_factor, per_request);
        let confirmed = match c.facts.get("confirm_ratio").and_then(|r| r.as_f64()) {
            // A rise certain against the key's own reference asks yesterday for less, and
            // only to tell it from the key's day.
            Some(needed) => now >= needed * then * crowd_factor,
            // A half-certain rise takes the rest of its certainty from yesterday: `min_ratio`
            // times then, beyond chance. At a bare 2.05x and 2.2x yesterday, four-minute
            // bursts on DEV seeds 3 and 5 paged.
            None => clearly_above(now, minutes, then, min_ratio * crowd_factor, per_request),
        };
        if !above || (half && (then <= 0.0 || !confirmed)) {
            debug!(key = ?c.api_key_id(), now, then, crowd = crowd.0, half, "not paged: yesterday's level");
            return false;
        }
        c.facts.insert("yesterday_per_minute".into(), json!(then));
        c.facts
            .insert("crowd_since_yesterday".into(), json!(crowd_factor));
        if then > 0.0 {
            let said = measure.per_minute(then);
            c.summary
                .push_str(&format!(" (at this time yesterday: {said})"));
        }
        true
    });
    before - candidates.len()
}

/// Yesterday's levels, fetched for the keys a level rule flags and kept for the ten-minute
/// block of the clock they were fetched in; the crowd's rise since, re-read each minute.
#[derive(Debug, Default)]
pub struct Routine {
    block: u32,
    known: FxMap<String, Yesterday>,
    /// The crowd over the ten minutes before the minute it was read in (that minute).
    /// Yesterday's levels hold for a block, but the crowd moves: read once a block, it was up
    /// to twenty minutes behind a daily peak's rise, and a key rising with the peak paged for
    /// being a little above its yesterday (DEV seed 8, at x1.12).
    crowd: Option<(u32, SinceYesterday)>,
}

impl Routine {
    /// [`judge`] with yesterday's levels from ClickHouse as of `now_s`. When they cannot be
    /// read, no full alarm is spared (a page too many beats a page lost) and no half one
    /// confirmed.
    pub async fn judge(
        &mut self,
        client: &Client,
        candidates: &mut Vec<Candidate>,
        min_ratio: f64,
        now_s: u32,
    ) -> usize {
        if self.block != now_s / BLOCK_S {
            self.block = now_s / BLOCK_S;
            self.known.clear();
        }
        let mut missing: Vec<&str> = candidates
            .iter()
            .filter(|c| judged_by_level(c))
            .filter_map(Candidate::api_key_id)
            .filter(|key| !self.known.contains_key(*key))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            match fetch(client, &missing, now_s).await {
                Ok(rows) => {
                    for key in missing {
                        self.known.insert(key.to_owned(), Yesterday::default());
                    }
                    self.known.extend(rows);
                }
                Err(err) => warn!(%err, "could not read yesterday's levels: nothing spared"),
            }
        }
        let minute = now_s / 60;
        let fresh = matches!(self.crowd, Some((read, _)) if read == minute);
        if !fresh && candidates.iter().any(judged_by_level) {
            match fetch_crowd(client, now_s).await {
                Ok(crowd) => self.crowd = Some((minute, crowd)),
                Err(err) => warn!(%err, "could not read the crowd's rise since yesterday"),
            }
        }
        let crowd = |key: &str| {
            self.crowd
                .as_ref()
                .map_or(Crowd::UNKNOWN, |(_, c)| c.without(key))
        };
        judge(candidates, min_ratio, crowd, |key| {
            self.known.get(key).copied()
        })
    }
}

/// Answered requests of a rollup row (what the requests rule counts), as SQL.
const ANSWERED: &str = "greatest(toInt64(countMerge(requests)) - toInt64(sumMerge(errors_auth) \
    + sumMerge(errors_rate_limited) + sumMerge(errors_client) + sumMerge(errors_server)), 0)";

/// The [`SinceYesterday`] as of `now_s`: each key's last closed [`BLOCK_S`] (whole minutes
/// before `now_s`'s own) against its busiest block within [`AROUND_S`] of this time yesterday.
async fn fetch_crowd(
    client: &Client,
    now_s: u32,
) -> Result<SinceYesterday, clickhouse::error::Error> {
    let rows = client
        .query_raw(&crowd_sql(now_s))
        .fetch_all::<(String, u64, f64)>()
        .await?;
    Ok(SinceYesterday::new(rows))
}

fn crowd_sql(now_s: u32) -> String {
    let to = now_s - now_s % 60;
    let from = to.saturating_sub(BLOCK_S);
    let (then_from, then_to) = around_yesterday(now_s);
    format!(
        "SELECT api_key_id, toUInt64(sum(today)), toFloat64(max(yesterday)) FROM ( \
           SELECT api_key_id, intDiv(toUInt32(minute), {BLOCK_S}) AS block, \
             sumIf(answered, minute >= toDateTime({from})) AS today, \
             sumIf(answered, minute < toDateTime({then_to})) AS yesterday \
           FROM ( \
             SELECT api_key_id, minute, {ANSWERED} AS answered FROM {KEY_ROLLUP_TABLE} \
             WHERE (minute >= toDateTime({then_from}) AND minute < toDateTime({then_to})) \
                OR (minute >= toDateTime({from}) AND minute < toDateTime({to})) \
             GROUP BY api_key_id, minute) \
           GROUP BY api_key_id, block) \
         GROUP BY api_key_id HAVING max(yesterday) > 0"
    )
}

/// "This time yesterday": [`AROUND_S`] either side of `now_s` a day earlier.
fn around_yesterday(now_s: u32) -> (u32, u32) {
    let then = now_s.saturating_sub(DAY_S);
    (then.saturating_sub(AROUND_S), then + AROUND_S)
}

/// The SQL [`Routine`] runs as of `now_s` (yesterday's levels for `keys`, the crowd), named:
/// see [`crate::data::every_read`].
pub fn every_read(keys: &[&str], now_s: u32) -> Vec<(&'static str, String)> {
    vec![
        ("yesterday_levels", levels_sql(keys, now_s)),
        ("crowd_since_yesterday", crowd_sql(now_s)),
    ]
}

/// Each of `keys`' busiest ten minutes within [`AROUND_S`] of `now_s` a day earlier (keys
/// without rows then are left out).
async fn fetch(
    client: &Client,
    keys: &[&str],
    now_s: u32,
) -> Result<Vec<(String, Yesterday)>, clickhouse::error::Error> {
    client
        .query_raw(&levels_sql(keys, now_s))
        .fetch_all::<(String, f64, f64, f64)>()
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|(key, requests, cost_usd, tokens)| {
                    let levels = Yesterday {
                        requests,
                        cost_usd,
                        tokens,
                    };
                    (key, levels)
                })
                .collect()
        })
}

fn levels_sql(keys: &[&str], now_s: u32) -> String {
    let (from, to) = around_yesterday(now_s);
    let keys = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let per_minute = f64::from(BLOCK_S / 60);
    format!(
        "SELECT api_key_id, max(requests), max(cost), max(tokens) FROM ( \
           SELECT api_key_id, intDiv(toUInt32(minute), {BLOCK_S}) AS block, \
             {ANSWERED} / {per_minute} AS requests, \
             sumMerge(cost_usd) / {per_minute} AS cost, \
             (sumMerge(prompt_tokens) + sumMerge(completion_tokens)) / {per_minute} AS tokens \
           FROM {KEY_ROLLUP_TABLE} WHERE api_key_id IN ({keys}) \
             AND minute >= toDateTime({from}) AND minute < toDateTime({to}) \
           GROUP BY api_key_id, block) \
         GROUP BY api_key_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tripline_core::alert::Severity;

    fn candidate(key: &str, rule: &str, observed: f64) -> Candidate {
        let mut facts = BTreeMap::new();
        facts.insert("rule".to_owned(), json!(rule));
        facts.insert("requests_per_minute".to_owned(), json!(observed * 100.0));
        let mut labels = BTreeMap::new();
        labels.insert("api_key_id".to_owned(), key.to_owned());
        Candidate {
            detector: Detector::SpendSpike,
            labels,
            severity: Severity::Warning,
            observed,
            expected: observed / 4.0,
            upper: observed / 2.0,
            score: 0.75,
            window_start_s: 0,
            window_end_s: 60,
            summary: String::new(),
            facts,
        }
    }

    const DAY: Yesterday = Yesterday {
        requests: 40.0,
        cost_usd: 0.10,
        tokens: 50_000.0,
    };

    /// A key at its daily peak is spared; the same level on a key that was quiet at this time
    /// yesterday pages, and says what yesterday was.
    #[test]
    fn a_key_no_busier_than_yesterday_is_spared() {
        let mut c = vec![candidate("peak", "sustained", 0.09)];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(DAY)), 1);
        assert!(c.is_empty());

        let quiet = Yesterday {
            cost_usd: 0.01,
            ..DAY
        };
        let mut c = vec![candidate("new-job", "sustained", 0.09)];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(quiet)), 0);
        assert_eq!(c[0].facts["yesterday_per_minute"], json!(0.01));
        assert!(
            c[0].summary
                .ends_with(" (at this time yesterday: $0.0100 a minute)"),
            "{}",
            c[0].summary
        );
    }

    /// Busier than yesterday means clearly so, given how many requests each level counts. DEV
    /// seed 7's key-0018, 18.1 requests a minute for 7 minutes against 17.7 yesterday, is
    /// spared; 30 for 10 minutes pages. The same excess needs a longer run to be certain.
    #[test]
    fn busier_than_yesterday_is_beyond_chance() {
        let day = Yesterday {
            requests: 17.7,
            ..DAY
        };
        let run = |per_minute: f64, minutes: u32| {
            let mut c = candidate("k", "sustained_requests", per_minute / 100.0);
            c.facts.insert("minutes".into(), json!(minutes));
            vec![c]
        };
        let spared = |mut c: Vec<Candidate>| judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(day));
        assert_eq!(spared(run(18.1, 7)), 1);
        assert_eq!(spared(run(30.0, 10)), 0);
        assert_eq!(spared(run(24.0, 10)), 0);
        assert_eq!(spared(run(24.0, 1)), 1);
        // Dollars and tokens are counted in requests at yesterday's amount per request: $0.004
        // a request, so $0.096 a minute is 24 requests'.
        let mut dollars = candidate("k", "sustained", 0.096);
        dollars.facts.insert("minutes".into(), json!(10));
        let day = Yesterday {
            requests: 17.7,
            cost_usd: 17.7 * 0.004,
            tokens: 0.0,
        };
        let mut c = vec![dollars.clone()];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(day)), 0);
        dollars.facts.insert("minutes".into(), json!(1));
        let mut c = vec![dollars];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(day)), 1);
    }

    /// Each rule against its own measure: requests against yesterday's answered requests,
    /// tokens against tokens.
    #[test]
    fn each_rule_is_compared_on_its_own_measure() {
        // 0.3 requests a minute (the fact) against yesterday's 40: spared.
        let mut c = vec![candidate("k", "sustained_requests", 0.003)];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(DAY)), 1);
        // 60 requests a minute against 40: kept, though its dollars are below yesterday's.
        let mut c = vec![candidate("k", "sustained_requests", 0.6)];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(DAY)), 0);

        let mut tokens = candidate("k", "sustained", 100_000.0);
        tokens.labels.insert("measure".into(), "tokens".into());
        let mut c = vec![tokens.clone()];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(DAY)), 0);
        tokens.observed = 40_000.0;
        let mut c = vec![tokens];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(DAY)), 1);
    }

    /// A rise only half certain on the key's model pages when the key is clearly at least
    /// twice as busy as at this time yesterday; not when yesterday is unknown, idle or closer.
    #[test]
    fn a_half_certain_rise_pages_only_at_twice_yesterday() {
        let half = || {
            let mut c = candidate("k", "sustained", 0.09);
            c.facts.insert("confirm".into(), json!("yesterday"));
            c.facts.insert("minutes".into(), json!(10));
            vec![c]
        };
        // Yesterday's 40 requests a minute price a request: $0.09 now against $0.03 then is
        // 120 requests a minute for ten minutes against twice 40.
        let at = |cost_usd| Some(Yesterday { cost_usd, ..DAY });
        let mut c = half();
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| at(0.03)), 0);
        assert!(
            c[0].summary.contains("$0.0300 a minute"),
            "{}",
            c[0].summary
        );
        // Against $0.042 (x2.14): 85.7 against twice 40, 5.7 above with a standard error of 5.
        for yesterday in [at(0.042), at(0.05), at(0.0), None] {
            let mut c = half();
            assert_eq!(
                judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| yesterday),
                1,
                "{yesterday:?}"
            );
        }
        // The crowd's rise since counts too: x3 yesterday is not clearly twice a x1.5 crowd's.
        let mut c = half();
        assert_eq!(judge(&mut c, 2.0, |_| Crowd(1.5), |_| at(0.03)), 1);
        // A full alarm at the same levels pages from clearly above yesterday's.
        let mut c = vec![candidate("k", "sustained", 0.09)];
        c[0].facts.insert("minutes".into(), json!(10));
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| at(0.05)), 0);
    }

    /// A rise certain against the key's reference asks yesterday for its own `confirm_ratio`:
    /// x1.8 yesterday's level pages at 1.5, not at the `min_ratio` of 2.
    #[test]
    fn a_candidate_may_name_the_ratio_yesterday_must_confirm() {
        let ramp = |ratio: Option<f64>| {
            let mut c = candidate("k", "sustained", 0.09);
            c.facts.insert("confirm".into(), json!("yesterday"));
            if let Some(ratio) = ratio {
                c.facts.insert("confirm_ratio".into(), json!(ratio));
            }
            vec![c]
        };
        let at = |cost_usd| Some(Yesterday { cost_usd, ..DAY });
        assert_eq!(
            judge(&mut ramp(Some(1.5)), 2.0, |_| Crowd::UNKNOWN, |_| at(0.05)),
            0
        );
        assert_eq!(
            judge(&mut ramp(Some(1.5)), 2.0, |_| Crowd::UNKNOWN, |_| at(0.065)),
            1
        );
        assert_eq!(
            judge(&mut ramp(None), 2.0, |_| Crowd::UNKNOWN, |_| at(0.05)),
            1
        );
        assert_eq!(
            judge(&mut ramp(Some(1.5)), 2.0, |_| Crowd::UNKNOWN, |_| None),
            1
        );
    }

    /// Everyone x1.75 their yesterday (a daily peak): a key x1.7 its own yesterday is spared, and
    /// a rise needs its ratio beyond the crowd's; a crowd below yesterday's lowers no bar.
    #[test]
    fn yesterday_counts_times_the_crowds_rise_since() {
        let at = |cost_usd| Some(Yesterday { cost_usd, ..DAY });
        let peak = Crowd(1.75);
        let mut c = vec![candidate("k", "sustained", 0.085)];
        assert_eq!(judge(&mut c, 2.0, |_| peak, |_| at(0.05)), 1);
        let mut c = vec![candidate("k", "sustained", 0.12)];
        assert_eq!(judge(&mut c, 2.0, |_| peak, |_| at(0.05)), 0);
        assert_eq!(c[0].facts["crowd_since_yesterday"], json!(1.75));

        let ramp = || {
            let mut c = candidate("k", "sustained", 0.14);
            c.facts.insert("confirm".into(), json!("yesterday"));
            c.facts.insert("confirm_ratio".into(), json!(1.5));
            vec![c]
        };
        // x2.8 yesterday: pages alone (bar 1.5), not in the peak (bar 1.5 x 1.75 = 2.625)
        // unless it rose beyond it.
        assert_eq!(judge(&mut ramp(), 2.0, |_| Crowd::UNKNOWN, |_| at(0.05)), 0);
        assert_eq!(judge(&mut ramp(), 2.0, |_| peak, |_| at(0.06)), 1);
        assert_eq!(judge(&mut ramp(), 2.0, |_| peak, |_| at(0.05)), 0);
        assert_eq!(judge(&mut ramp(), 2.0, |_| Crowd(0.5), |_| at(0.05)), 0);
        assert_eq!(judge(&mut ramp(), 2.0, |_| Crowd(0.5), |_| at(0.1)), 1);
    }

    /// The crowd since yesterday is the median key's rise, each key left out of its own: three
    /// keys at x6 under incidents of their own do not raise everyone's bar, and a key alone
    /// on its gateway has no crowd.
    #[test]
    fn the_crowd_since_yesterday_is_the_median_other_key() {
        let block = |n: u64| n * u64::from(BLOCK_S / 60);
        let mut rows: Vec<(String, u64, f64)> = (0..10)
            .map(|i| (format!("calm-{i}"), block(12), block(10) as f64))
            .collect();
        rows.extend((0..3).map(|i| (format!("hot-{i}"), block(60), block(10) as f64)));
        let crowd = SinceYesterday::new(rows);
        assert_eq!(crowd.without("calm-0"), Crowd(1.2));
        assert_eq!(crowd.without("hot-0"), Crowd(1.2));
        assert_eq!(crowd.without("new-key"), Crowd(1.2));
        let alone = SinceYesterday::new(vec![("solo".into(), block(50), block(10) as f64)]);
        assert_eq!(alone.without("solo"), Crowd(1.0));
    }

    /// A price move, the per-minute rule, other detectors and keys whose yesterday is unknown
    /// are never spared.
    #[test]
    fn only_level_rules_with_a_known_yesterday_are_spared() {
        let busy = Yesterday {
            requests: 1e9,
            cost_usd: 1e9,
            tokens: 1e9,
        };
        let mut per_minute = candidate("k", "sustained", 0.01);
        per_minute.facts.remove("rule");
        let mut other = candidate("k", "sustained", 0.01);
        other.detector = Detector::RetryStorm;
        let mut c = vec![candidate("k", "sustained_price", 0.01), per_minute, other];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| Some(busy)), 0);
        let mut c = vec![candidate("k", "sustained", 0.01)];
        assert_eq!(judge(&mut c, 2.0, |_| Crowd::UNKNOWN, |_| None), 0);
    }
}
