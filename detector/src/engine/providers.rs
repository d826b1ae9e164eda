//! retry_storm per provider/model: a provider storm, and the keys caught in it.
//!
//! A provider storm is a provider/model whose failures (429/5xx upstream attempts) and load
//! rise together and stay up: over the last 60 s its failed share is `provider_failure_rise`
//! above its own usual share, by the share's one-sided 95 % Wilson lower bound and in each 20 s
//! third of the window (a bad spell of up to 30 s leaves a third nearly clean), among the other
//! keys too once the key failing most is left out (one key storming on a healthy provider is
//! that key's alert; when the others made few attempts, by a 99.5 % bound), while its upstream
//! attempts per minute (against the last quarter hour) or per request run at
//! `provider_load_rise` times their usual level. Retries without backoff make it critical.
//! Retries with backoff make it a warning once the 60 s that ended 30 s ago were failing
//! throughout as well: a provider's bad spells (seconds to half a minute each) can follow each
//! other for a minute, and clients backing off through them retry as they do in a storm (DEV
//! seed 1: openai failing 32-46 % of attempts for 60 s); with backoff, the retries' load is
//! bounded and a storm can be told a little later, whereas retries without backoff multiply
//! it.
//!
//! A request is the client's, not each time it is sent: a client's repeat of an idempotency
//! key is a new first attempt upstream but the same request, so retries with backoff raise
//! the attempts per request as the gateway's own retries do. Judged per request, a storm does
//! not hide behind a busy spell that just ended and raised the attempts per minute it is
//! compared with.
//!
//! A provider/model that one key alone calls has no others to fail too: it storms when that
//! key sends no more requests than usual (under the key-level `rate_rise`), so the failures
//! and the retries are the provider's doing; a key sending more than it ever does and failing
//! is that key's storm.
//!
//! Keys merely caught in it do not page on their own: a key's storm candidate whose failures
//! lie on a storming provider/model, not clearly worse than the other keys' there, is folded into
//! the provider's alert (listed in its facts). While the provider's trouble is still too young
//! to be a storm, such a key is held back (the provider's alert follows, or it was a bad
//! spell). A key failing clearly more than the others on its provider still alerts.
//!
//! A key that makes nearly all of its provider/model's attempts has too few others beside it
//! to tell whose the failures are, and the provider's alert, when its clients back off, comes
//! 90 s into the trouble, a minute after the key's own candidate (DEV seeds 10-11: the largest
//! key paged 40-50 s before its provider's storm). While that provider/model fails as the key
//! does and the key sends fewer than `rate_rise` times its usual requests, its candidate waits
//! up to `UNCLEAR_HELD_S` for the provider's alert to fold it in; then it pages as before.

use std::collections::BTreeMap;

use tripline_core::models::proportion::wilson_lower;

use super::*;
use crate::data::{ProviderBucket, PROVIDER_BUCKET_S};

/// One-sided 95 % and 99.5 % normal quantiles.
const Z_95: f64 = 1.645;
const Z_995: f64 = 2.576;
/// Closed minutes of history before a provider/model's usual levels are trusted.
const WARMUP_MINUTES: u64 = 20;
/// Closed minutes in a row a storm keeps out of the baseline; after that it is the new normal.
const MAX_SET_ASIDE: u32 = 30;
/// Attempts by the keys other than the one failing most from which their failed share speaks
/// for itself. With fewer (a provider whose traffic is mostly one key's), the share must be
/// beyond doubt by its 99.5 % Wilson bound; fewer than `PEER_LEAST_ATTEMPTS` say nothing.
const PEER_MIN_ATTEMPTS: f64 = 20.0;
const PEER_LEAST_ATTEMPTS: f64 = 4.0;
/// A key is held back when at least this many attempts of other keys overlap its failures.
const HOLD_PEER_MIN_ATTEMPTS: u64 = 10;
/// The longest a key's storm candidate waits when too few other keys call its provider/model
/// to tell whose the failures are: a provider storm with backoff (or one of an only caller) is
/// judged `WINDOW_S + BACKOFF_HELD_S` into it, and the key's candidate comes no earlier than
/// its start (30-40 s in on DEV seeds 10-11, the provider's alert 40-50 s after).
pub(super) const UNCLEAR_HELD_S: u32 = WINDOW_S + BACKOFF_HELD_S;
/// How long a provider/model judged storming keeps holding its keys after its last judgement
/// (a window: a storm's cycles may fall short of its bar now and then).
pub(super) const STORM_REMEMBERED_S: u32 = WINDOW_S;
/// A key whose storm candidate has not been unclear for this long waits again next time.
pub(super) const UNCLEAR_FORGET_S: u32 = 5 * 60;
/// A provider storm fails more than one key.
const MIN_FAILING_KEYS: u64 = 2;
/// Retry chains in the window below which no backoff pattern is judged.
const MIN_CHAINS: f64 = 3.0;
/// Keys named in a provider storm's summary (all of the ones read are in its facts).
const KEYS_NAMED: usize = 3;
const WINDOW_S: u32 = 60;
/// A storm whose clients back off, or one of a provider/model that one key alone calls, must
/// have been one this many seconds ago already.
const BACKOFF_HELD_S: u32 = 30;

/// Half-life, in minutes, of a provider/model's recent attempts per minute: what a storm's
/// load is judged against.
const RECENT_HALF_LIFE_MINUTES: f64 = 10.0;

/// What is remembered about one provider/model: its upstream attempts, failures (429/5xx) and
/// requests (first attempts that are not a client's repeat) per minute (idle minutes count as
/// none), as EWMAs over closed minutes.
#[derive(Debug, Clone, Default)]
pub(super) struct ProviderState {
    attempts: Ewma,
    failures: Ewma,
    requests: Ewma,
    /// Attempts per minute over the last quarter hour or so. The hour-long `attempts` lags a
    /// daily rhythm: an hour after a busy spell at three times the load, a storm doubling the
    /// attempts looked like less than the usual load.
    recent_attempts: Ewma,
    last_folded: u32,
    last_active: u32,
    /// Closed minutes in a row left out of the baseline as part of a storm.
    set_aside: u32,
}

impl ProviderState {
    fn usual_share(&self) -> f64 {
        (self.failures.mean / self.attempts.mean.max(1e-9)).clamp(0.0, 1.0)
    }

    fn usual_per_request(&self) -> f64 {
        if self.requests.mean > 0.0 {
            (self.attempts.mean / self.requests.mean).max(1.0)
        } else {
            1.0
        }
    }

    fn warm(&self) -> bool {
        self.attempts.n >= WARMUP_MINUTES
    }

    /// Folds one closed minute, unless it is part of a storm (its failed share, by its Wilson
    /// lower bound, `rise` above the usual): a storm must not become the usual level it is
    /// judged against, for `MAX_SET_ASIDE` minutes at most.
    fn learn(&mut self, c: Counts, rise: f64, alpha: f64) {
        let storming = self.warm()
            && c.attempts > 0
            && wilson_lower(c.failures, c.attempts, Z_95) >= self.usual_share() + rise
            && self.set_aside < MAX_SET_ASIDE;
        if storming {
            self.set_aside += 1;
            return;
        }
        self.set_aside = 0;
        self.attempts.update(c.attempts as f64, alpha);
        self.failures.update(c.failures as f64, alpha);
        self.requests.update(c.requests() as f64, alpha);
        self.recent_attempts.update(
            c.attempts as f64,
            alpha_from_half_life(RECENT_HALF_LIFE_MINUTES),
        );
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    attempts: u64,
    failures: u64,
    first: u64,
    /// First attempts that were a client repeating a request (same idempotency key).
    client_retries: u64,
}

impl Counts {
    /// The clients' requests: first attempts less the repeats.
    fn requests(&self) -> u64 {
        self.first.saturating_sub(self.client_retries)
    }

    fn add(&mut self, b: &ProviderBucket) {
        self.attempts += b.attempts;
        self.failures += b.failures;
        self.first += b.first_attempts;
    }
}

/// A provider/model storming now.
#[derive(Debug)]
pub(super) struct Storm<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    window_start: u32,
    /// Failed share of the window's attempts, and the usual share.
    pub share: f64,
    usual: f64,
    attempts: u64,
    failures: u64,
    /// Attempts per minute and per first attempt, as multiples of the usual.
    rate_ratio: f64,
    request_ratio: f64,
    /// Upstream attempts per successful one in the window.
    amplification: f64,
    chains: f64,
    fast_chains: f64,
    /// The keys failing most on it (weighted failures over the window), most first, and how
    /// many keys failed on it.
    keys: Vec<(&'a str, f64)>,
    failing_keys: u64,
    /// One key alone calls it: nobody else to fail too.
    only_caller: bool,
    /// Keys whose own storm candidates were folded into this one.
    pub folded: Vec<String>,
}

impl Storm<'_> {
    fn no_backoff(&self) -> bool {
        without_backoff(self.chains, self.fast_chains)
    }
}

/// A key whose storm candidate was [`Caught::Unclear`]: since when and when last, and whether
/// it has paged (its wait over).
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub since: u32,
    pub last: u32,
    pub paged: bool,
}

/// What becomes of a key's storm candidate whose failures are its provider's.
pub(super) enum Caught {
    /// Into the provider storm at this index.
    Folded(usize),
    /// The provider fails the other keys as much, but is no storm (yet).
    Held,
    /// The provider/model fails as the key does, but too few other keys call it to tell whose
    /// the failures are: its storm, if it is one, is not judged yet.
    Unclear,
}

impl Engine {
    /// Folds the closed minutes of every provider/model into its usual levels. Run before
    /// [`Engine::fold`], from the same watermark.
    pub(super) fn fold_providers(&mut self, data: &CycleData, closed_before: u32) {
        let from = self.folded_through;
        if closed_before <= from {
            return;
        }
        let mut minutes: BTreeMap<(&str, &str), BTreeMap<u32, Counts>> = BTreeMap::new();
        for b in data
            .provider_buckets
            .iter()
            .filter(|b| b.minute >= from && b.minute < closed_before)
        {
            minutes
                .entry((&b.provider, &b.model))
                .or_default()
                .entry(b.minute)
                .or_default()
                .add(b);
        }
        for c in data
            .provider_chains
            .iter()
            .filter(|c| c.minute >= from && c.minute < closed_before)
        {
            minutes
                .entry((&c.provider, &c.model))
                .or_default()
                .entry(c.minute)
                .or_default()
                .client_retries += c.client_retries;
        }
        for (&(provider, model), rows) in &minutes {
            let key = (provider.to_owned(), model.to_owned());
            let first = rows.keys().next().copied().unwrap_or(from);
            let state = self.providers.entry(key).or_insert_with(|| ProviderState {
                last_folded: first,
                last_active: first,
                ..ProviderState::default()
            });
            if let Some(&last) = rows.keys().next_back() {
                state.last_active = state.last_active.max(last);
            }
        }
        let rise = self.config.retry_storm.provider_failure_rise;
        let alpha = self.ip_alpha;
        for ((provider, model), state) in self.providers.iter_mut() {
            let rows = minutes.get(&(provider.as_str(), model.as_str()));
            let mut minute = state.last_folded.max(from);
            while minute < closed_before {
                let counts = rows
                    .and_then(|r| r.get(&minute))
                    .copied()
                    .unwrap_or_default();
                state.learn(counts, rise, alpha);
                minute += MINUTE;
            }
            state.last_folded = closed_before;
        }
        let idle = self.config.idle_evict_after_s;
        self.providers
            .retain(|_, s| u64::from(closed_before.saturating_sub(s.last_active)) <= idle);
    }

    /// The provider/models storming over the 60 s ending at `now_s`.
    pub(super) fn provider_storms<'a>(&self, data: &'a CycleData, now_s: u32) -> Vec<Storm<'a>> {
        let cfg = &self.config.retry_storm;
        let window_start = now_s.saturating_sub(WINDOW_S);
        let first_bucket = window_start.div_ceil(PROVIDER_BUCKET_S) * PROVIDER_BUCKET_S;
        let windows = window_counts(data, now_s, WINDOW_S);
        let earlier = window_counts(data, now_s.saturating_sub(BACKOFF_HELD_S), WINDOW_S);
        let covered = f64::from(now_s.saturating_sub(first_bucket).max(1)) / 60.0;
        let rise = cfg.provider_failure_rise;
        let mut storms = Vec::new();
        for ((provider, model), (total, thirds)) in windows {
            let Some(state) = self
                .providers
                .get(&(provider.to_owned(), model.to_owned()))
                .filter(|s| s.warm())
            else {
                continue;
            };
            if total.attempts < cfg.min_requests {
                continue;
            }
            let usual = state.usual_share();
            let share = total.failures as f64 / total.attempts as f64;
            if !failing_throughout(total, &thirds, usual + rise) {
                continue;
            }
            // With load rising: per minute, or per request of the clients'.
            let chains = window_chains(data, provider, model, window_start, now_s);
            let requests = (total.first as f64 - chains.client_retries).max(0.0);
            let rate_ratio =
                total.attempts as f64 / (state.recent_attempts.mean * covered).max(1e-9);
            let request_ratio = if requests >= 1.0 {
                total.attempts as f64 / requests / state.usual_per_request()
            } else {
                1.0
            };
            if rate_ratio.max(request_ratio) < cfg.provider_load_rise {
                continue;
            }
            // Failing the other keys too, not one key on its own.
            let (keys, failing_keys, calling_keys) =
                window_keys(data, provider, model, window_start, now_s);
            // The others' failures: what the window holds beyond the top key's, but no more
            // than the other keys' own rows say (the rows are per minute, spread pro rata).
            let (top_attempts, top_failures) = keys.first().map_or((0.0, 0.0), |k| (k.2, k.1));
            let others_attempts = total.attempts as f64 - top_attempts;
            let mut others_failures = (total.failures as f64 - top_failures).max(0.0);
            if !keys.is_empty() {
                others_failures = others_failures.min(keys.iter().skip(1).map(|k| k.1).sum());
            }
            // The others fail too; when they made few attempts, beyond doubt (the one-sided
            // 99.5 % Wilson bound: every provider/model is judged every cycle, and a few
            // attempts of other keys meeting a bad spell of seconds fail together by chance).
            let others_share = if others_attempts >= PEER_MIN_ATTEMPTS {
                others_failures / others_attempts
            } else {
                wilson_lower(
                    others_failures.round() as u64,
                    others_attempts.round() as u64,
                    Z_995,
                )
            };
            // No others at all: the provider's doing unless its one caller sends more requests
            // than usual (that key's own storm).
            let only_caller = calling_keys == 1;
            if only_caller {
                let usual_requests = state.requests.mean * covered;
                if requests >= cfg.rate_rise * usual_requests.max(1.0) {
                    continue;
                }
            } else if others_attempts < PEER_LEAST_ATTEMPTS
                || others_share < usual + rise
                || (!keys.is_empty() && failing_keys < MIN_FAILING_KEYS)
            {
                continue;
            }
            // Backed off, or its only caller's: a storm 30 s ago already. A key's own storm
            // builds its load over its first seconds (its clients' new requests 1.4x the
            // provider's usual over the first 60 s of one, 2.8x over the next, DEV seed 5):
            // held, its rise shows before the provider is blamed.
            if (only_caller || !without_backoff(chains.chains, chains.fast))
                && !earlier
                    .get(&(provider, model))
                    .is_some_and(|(t, thirds)| failing_throughout(*t, thirds, usual + rise))
            {
                continue;
            }
            let successes = total.attempts.saturating_sub(total.failures);
            storms.push(Storm {
                provider,
                model,
                window_start: first_bucket,
                share,
                usual,
                attempts: total.attempts,
                failures: total.failures,
                rate_ratio,
                request_ratio,
                amplification: total.attempts as f64 / successes.max(1) as f64,
                chains: chains.chains,
                fast_chains: chains.fast,
                keys: keys.into_iter().map(|(k, f, _)| (k, f)).collect(),
                failing_keys,
                only_caller,
                folded: Vec::new(),
            });
        }
        storms
    }

    /// Whether `row`'s storm candidate is its provider's: most of its 429/5xx attempts lie on
    /// a provider/model that fails the other keys as much (in the 10 s buckets its failures
    /// fall in, `failure_rise` above the usual), or on a storming one, and its own failed share
    /// there, by its one-sided 99.5 % Wilson lower bound, is not twice `failure_rise` above
    /// theirs.
    /// A provider/model judged storming within the last `STORM_REMEMBERED_S` counts as
    /// storming. With fewer than `HOLD_PEER_MIN_ATTEMPTS` attempts of other keys there (over
    /// the buckets and over the key's whole minute), it is [`Caught::Unclear`] while the
    /// provider/model's failed share, by its Wilson lower bound, is `provider_failure_rise`
    /// above the usual (a storm may be building) and the few others fail as much as the same
    /// test asks of many, or there are none (DEV seed 11: a small key's own storm beside 7
    /// clean attempts of another key; the largest key's provider storm beside 2 failed of 4).
    /// While the key's 60 s window still reaches into the minute before `row`'s, that minute's
    /// failures count too.
    pub(super) fn caught_in_provider(
        &self,
        data: &CycleData,
        row: &KeyMinute,
        storms: &[Storm<'_>],
        now_s: u32,
    ) -> Option<Caught> {
        let rise = self.config.retry_storm.failure_rise;
        let provider_rise = self.config.retry_storm.provider_failure_rise;
        let bucket_ms = i64::from(PROVIDER_BUCKET_S) * 1000;
        let previous = (now_s < row.minute + MINUTE).then(|| row.minute.saturating_sub(MINUTE));
        let (mut failed, mut caught, mut unclear, mut storm) = (0, 0, 0, None);
        for own in data.key_failures.iter().filter(|f| {
            (f.minute == row.minute || Some(f.minute) == previous) && f.api_key_id == row.api_key_id
        }) {
            failed += own.failures;
            // The 10 s buckets its failures fall in, and its whole minute's.
            let ((attempts, failures), in_minute) = data
                .provider_buckets
                .iter()
                .filter(|b| {
                    b.minute == own.minute && b.provider == own.provider && b.model == own.model
                })
                .fold(((0, 0), (0, 0)), |(overlap, minute), b| {
                    let start = i64::from(b.bucket) * 1000;
                    let add = |(a, f): (u64, u64)| (a + b.attempts, f + b.failures);
                    let overlaps = start <= own.last_ms && start + bucket_ms > own.first_ms;
                    (if overlaps { add(overlap) } else { overlap }, add(minute))
                });
            let others_failed = failures.saturating_sub(own.failures);
            let others_attempts = attempts.saturating_sub(own.attempts).max(others_failed);
            let others = others_failed as f64 / others_attempts.max(1) as f64;
            // Clearly worse: beyond doubt (many keys are judged every cycle, and a few attempts
            // of one of them fail more by chance), and by twice `failure_rise`.
            let own_low = wilson_lower(own.failures, own.attempts, Z_995);
            let margin = 2.0 * rise;
            if let Some(i) = storms
                .iter()
                .position(|s| s.provider == own.provider && s.model == own.model)
            {
                if own_low < storms[i].share.max(others) + margin {
                    caught += own.failures;
                    storm = Some(i);
                    continue;
                }
            }
            let id = (own.provider.clone(), own.model.clone());
            let state = self.providers.get(&id);
            let usual = state.map_or(0.0, ProviderState::usual_share);
            // A storm judged a moment ago (one cycle it may fall short of its bar) still
            // holds its keys.
            if let Some(&(_, share)) = self
                .recent_storms
                .get(&id)
                .filter(|(at, _)| now_s <= at + STORM_REMEMBERED_S)
            {
                if own_low < share.max(others) + margin {
                    caught += own.failures;
                    continue;
                }
            }
            // The others over the key's whole minute: `own` counts all of it.
            let minute_failed = in_minute.1.saturating_sub(own.failures);
            let minute_attempts = in_minute.0.saturating_sub(own.attempts).max(minute_failed);
            let minute_others = minute_failed as f64 / minute_attempts.max(1) as f64;
            if others_attempts >= HOLD_PEER_MIN_ATTEMPTS {
                if others >= usual + rise && own_low < others + margin {
                    caught += own.failures;
                }
            } else if minute_attempts < HOLD_PEER_MIN_ATTEMPTS
                && state.is_some_and(ProviderState::warm)
                && wilson_lower(failures, attempts, Z_95) >= usual + provider_rise
                && (minute_attempts == 0
                    || (minute_others >= usual + rise && own_low < minute_others + margin))
            {
                unclear += own.failures;
            }
        }
        if failed == 0 {
            None
        } else if caught * 2 >= failed {
            Some(storm.map_or(Caught::Held, Caught::Folded))
        } else if (caught + unclear) * 2 >= failed {
            Some(Caught::Unclear)
        } else {
            None
        }
    }
}

impl Storm<'_> {
    pub(super) fn candidate(
        &self,
        critical_amplification: f64,
        rise: f64,
        now_s: u32,
    ) -> Candidate {
        let mut c = Candidate::new(
            Detector::RetryStorm,
            &[("provider", self.provider), ("model", self.model)],
            self.window_start,
            now_s,
        );
        let no_backoff = self.no_backoff();
        c.severity = if no_backoff || self.amplification >= critical_amplification {
            Severity::Critical
        } else {
            Severity::Warning
        };
        (c.observed, c.expected, c.upper) = (self.share, self.usual, self.usual + rise);
        c.score = self.share.clamp(0.0, 1.0);
        let (load, per) = if self.rate_ratio >= self.request_ratio {
            (self.rate_ratio, "minute")
        } else {
            (self.request_ratio, "request")
        };
        c.summary = format!(
            "{}/{}: {:.0} % of upstream attempts failed (429/5xx) over the last 60 s, usually \
             {:.0} %, at {:.1}x its usual attempts per {per}{}",
            self.provider,
            self.model,
            100.0 * self.share,
            100.0 * self.usual,
            load,
            if no_backoff {
                ", retried without backoff"
            } else if self.chains >= MIN_CHAINS {
                ", retried with backoff"
            } else {
                ""
            },
        );
        let names: Vec<&str> = self.keys.iter().map(|k| k.0).collect();
        let total = (self.failing_keys as usize).max(names.len());
        if !names.is_empty() {
            let shown = &names[..names.len().min(KEYS_NAMED)];
            c.summary
                .push_str(&format!("; keys affected: {}", shown.join(", ")));
            if total > shown.len() {
                c.summary
                    .push_str(&format!(" (+{} more)", total - shown.len()));
            }
            if self.only_caller {
                c.summary.push_str(
                    " (its only caller, at no more requests than usual: the provider's failures)",
                );
            }
        }
        if !self.folded.is_empty() {
            c.summary.push_str(&format!(
                "; key storm alerts folded in: {}",
                self.folded.len()
            ));
        }
        c.facts.insert("failed_share".into(), json!(self.share));
        c.facts
            .insert("usual_failed_share".into(), json!(self.usual));
        c.facts.insert("attempts".into(), json!(self.attempts));
        c.facts
            .insert("failed_attempts".into(), json!(self.failures));
        c.facts
            .insert("attempts_per_minute_ratio".into(), json!(self.rate_ratio));
        c.facts.insert(
            "attempts_per_request_ratio".into(),
            json!(self.request_ratio),
        );
        c.facts
            .insert("amplification".into(), json!(self.amplification));
        c.facts
            .insert("retry_chains".into(), json!(self.chains.round()));
        c.facts.insert(
            "chains_without_backoff".into(),
            json!(self.fast_chains.round()),
        );
        c.facts.insert("keys_affected".into(), json!(names));
        c.facts
            .insert("only_caller".into(), json!(self.only_caller));
        c.facts.insert("keys_affected_total".into(), json!(total));
        c.facts
            .insert("key_alerts_folded".into(), json!(self.folded));
        c
    }
}

/// Whether retry chains came mostly without backoff (judged from `MIN_CHAINS` on).
fn without_backoff(chains: f64, fast: f64) -> bool {
    chains >= MIN_CHAINS && fast * 2.0 >= chains
}

/// Per provider/model, its attempts over the `span_s` seconds before `now_s` (whole 10 s
/// buckets) and in each third of them.
fn window_counts(
    data: &CycleData,
    now_s: u32,
    span_s: u32,
) -> BTreeMap<(&str, &str), (Counts, [Counts; 3])> {
    let start = now_s.saturating_sub(span_s);
    let first_bucket = start.div_ceil(PROVIDER_BUCKET_S) * PROVIDER_BUCKET_S;
    let mut windows: BTreeMap<(&str, &str), (Counts, [Counts; 3])> = BTreeMap::new();
    for b in data
        .provider_buckets
        .iter()
        .filter(|b| b.bucket >= first_bucket && b.bucket < now_s)
    {
        let (total, thirds) = windows.entry((&b.provider, &b.model)).or_default();
        total.add(b);
        thirds[((b.bucket - start) / (span_s / 3)).min(2) as usize].add(b);
    }
    windows
}

/// Failing up to `bar`: the window's failed share by its one-sided 95 % Wilson lower bound
/// (clear of chance), and each third's share (for the whole window).
fn failing_throughout(total: Counts, thirds: &[Counts; 3], bar: f64) -> bool {
    wilson_lower(total.failures, total.attempts, Z_95) >= bar
        && thirds
            .iter()
            .all(|t| t.attempts > 0 && t.failures as f64 / t.attempts as f64 >= bar)
}

/// How much of a minute's rows (read up to `now_s`) the window `[start, now_s)` covers.
fn weight(minute: u32, start: u32, now_s: u32) -> f64 {
    let span = (minute + MINUTE).min(now_s).saturating_sub(minute);
    let overlap = (minute + MINUTE)
        .min(now_s)
        .saturating_sub(minute.max(start));
    if span == 0 {
        0.0
    } else {
        f64::from(overlap) / f64::from(span)
    }
}

/// The keys failing most on a provider/model over the window: (key, failures, attempts),
/// pro rata of the minutes they fall in, most failures first; and how many keys failed there
/// and called it (the most of any minute in the window: lower bounds).
fn window_keys<'a>(
    data: &'a CycleData,
    provider: &str,
    model: &str,
    start: u32,
    now_s: u32,
) -> (Vec<(&'a str, f64, f64)>, u64, u64) {
    let mut per: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let (mut failing, mut calling) = (0, 0);
    for r in data
        .provider_keys
        .iter()
        .filter(|r| r.provider == provider && r.model == model)
    {
        let w = weight(r.minute, start, now_s);
        if w <= 0.0 {
            continue;
        }
        failing = failing.max(r.failing_keys);
        calling = calling.max(r.calling_keys);
        let e = per.entry(&r.api_key_id).or_default();
        e.0 += w * r.failures as f64;
        e.1 += w * r.attempts as f64;
    }
    let mut keys: Vec<(&str, f64, f64)> = per.into_iter().map(|(k, (f, a))| (k, f, a)).collect();
    keys.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    (keys, failing, calling)
}

/// Retry chains on a provider/model over a window, pro rata of the minutes they fall in.
#[derive(Debug, Clone, Copy, Default)]
struct WindowChains {
    chains: f64,
    /// Chains without backoff.
    fast: f64,
    /// Client requests that repeated one sent before.
    client_retries: f64,
}

fn window_chains(
    data: &CycleData,
    provider: &str,
    model: &str,
    start: u32,
    now_s: u32,
) -> WindowChains {
    data.provider_chains
        .iter()
        .filter(|r| r.provider == provider && r.model == model)
        .fold(WindowChains::default(), |acc, r| {
            let w = weight(r.minute, start, now_s);
            WindowChains {
                chains: acc.chains + w * r.chains as f64,
                fast: acc.fast + w * r.fast_chains as f64,
                client_retries: acc.client_retries + w * r.client_retries as f64,
            }
        })
}
