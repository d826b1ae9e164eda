//! retry_storm per key: retry share, amplification and storms building (provider/model storms,
//! and the keys folded into them, are in `providers.rs`).

use tripline_core::models::proportion::wilson_lower;

use super::providers::{Caught, UNCLEAR_HELD_S};
use super::*;
use crate::data::{KeyProviderFailures, KeyRetries, PROVIDER_BUCKET_S};

/// One-sided 95 % normal quantile.
const Z_95: f64 = 1.645;

/// A key's retry counts over the last 60 s: the minute so far plus the part of the previous
/// minute that the window still covers, pro rata. A provider's bad spell (3-30 s of failures
/// and retries) fills most of the first seconds of a minute but at most half of this window;
/// a storm keeps it full. A minute judged when it has ended is the minute alone.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    requests: f64,
    retries: f64,
    failures: f64,
    attempts: f64,
    successes: f64,
}

impl Window {
    fn new(
        row: &KeyMinute,
        retries: Option<&KeyRetries>,
        previous: Option<(&MinuteCounts, f64)>,
    ) -> Self {
        let mut w = Window {
            requests: row.requests as f64,
            retries: row.retries as f64,
            failures: row.failures as f64,
            attempts: retries.map_or(0.0, |r| r.provider_attempts as f64),
            successes: retries.map_or(0.0, |r| {
                r.provider_successes.min(r.provider_attempts) as f64
            }),
        };
        if let Some((p, weight)) = previous {
            w.requests += weight * f64::from(p.requests);
            w.retries += weight * f64::from(p.retries);
            w.failures += weight * f64::from(p.failures);
            w.attempts += weight * f64::from(p.attempts);
            w.successes += weight * f64::from(p.successes);
        }
        w
    }

    fn share(&self) -> f64 {
        self.retries / self.requests.max(1.0)
    }

    /// The retry share's one-sided 95 % Wilson lower bound.
    fn share_low(&self) -> f64 {
        wilson_lower(
            self.retries.round() as u64,
            self.requests.round() as u64,
            Z_95,
        )
    }

    /// Attempts per successful request, and the same judged by the one-sided 95 % Wilson lower
    /// bound of the failed share (`1 / (1 - failed)`), so that a handful of fast failures before
    /// the slow successes finish is not a storm. With upstream attempts logged, both counts
    /// come from them: attempts and their successes share timestamps, whereas a gateway
    /// request and its attempts can fall in different minutes (a burst that just ended leaves
    /// attempts in the next minute, with few requests to divide by), and cache hits have no
    /// attempt at all. Without them, gateway requests over gateway successes.
    fn amplification(&self) -> (f64, f64) {
        let (attempts, successes) = if self.attempts > 0.0 {
            (self.attempts, self.successes)
        } else {
            (self.requests, (self.requests - self.failures).max(0.0))
        };
        attempts_per_success(attempts, successes)
    }
}

/// Attempts per success as seen, and as judged by the one-sided 95 % Wilson lower bound of the
/// failed share (`1 / (1 - failed)`; counts weighted by the window are rounded for the bound).
fn attempts_per_success(attempts: f64, successes: f64) -> (f64, f64) {
    let successes = successes.min(attempts);
    let point = attempts / successes.max(1.0);
    let (n, ok) = (attempts.round() as u64, successes.round() as u64);
    let failed_low = wilson_lower(n.saturating_sub(ok), n, Z_95);
    (point, 1.0 / (1.0 - failed_low).max(1e-9))
}

/// What a cycle's retry judgement leaves for the engine to remember
/// ([`Engine::remember_retries`]).
#[derive(Debug, Default)]
pub(super) struct RetryNotes {
    /// Keys whose candidates were [`Caught::Unclear`] and not surging, and whether they paged
    /// (their wait over).
    pub unclear: Vec<(String, bool)>,
    /// The provider/models judged storming, with their failed share.
    pub storms: Vec<(String, String, f64)>,
}

/// Whether the key sent `rate_rise` times its usual requests over the last 60 s (its own, not
/// its clients' repeats): a key whose failures rise with its load is storming on its own. A
/// key with too little history to know its usual counts as surging, as for a storm building.
fn surging(window: &Window, state: Option<&KeyState>, rate_rise: f64) -> bool {
    match state {
        Some(state) if state.traffic.n >= 10 => {
            window.requests - window.retries >= rate_rise * state.traffic.mean.max(1.0)
        }
        _ => true,
    }
}

/// The key's previous minute and how much of it the 60 s window ending at `now_s` still
/// covers (none once `row`'s minute has ended).
fn previous_minute<'s>(
    state: &'s KeyState,
    row: &KeyMinute,
    now_s: u32,
) -> Option<(&'s MinuteCounts, f64)> {
    let seen = (f64::from(now_s.saturating_sub(row.minute)) / 60.0).clamp(0.0, 1.0);
    let previous = state.previous.as_ref()?;
    (seen < 1.0 && previous.minute + MINUTE == row.minute).then_some((previous, 1.0 - seen))
}

impl Engine {
    /// Pushes the cycle's retry_storm candidates to `out`, and to `notes` what the engine is
    /// to remember of them.
    pub(super) fn assess_retries(
        &self,
        data: &CycleData,
        known: &[Option<&KeyState>],
        now_s: u32,
        out: &mut Vec<Candidate>,
        notes: &mut RetryNotes,
    ) {
        let cfg = &self.config.retry_storm;
        // Provider storms first: the keys caught in them are folded into their alerts.
        let mut storms = self.provider_storms(data, now_s);
        let retries_by_minute: FxMap<(&str, u32), &crate::data::KeyRetries> = data
            .retries
            .iter()
            .map(|r| ((r.api_key_id.as_str(), r.minute), r))
            .collect();
        for (row, state) in data.keys.iter().zip(known) {
            if row.minute < self.folded_through
                || !self.key_enabled(Detector::RetryStorm, &row.api_key_id, &row.project)
            {
                continue;
            }
            let retries = retries_by_minute.get(&(row.api_key_id.as_str(), row.minute));
            // Most minutes of most keys: nothing retried, nothing failed upstream.
            if row.retries == 0
                && retries.is_none_or(|r| r.provider_attempts <= r.provider_successes)
            {
                continue;
            }
            let fast = retries.map_or(0, |r| r.fast_chains);
            let chains = retries.map_or(0, |r| r.chains);
            let no_backoff = chains > 0 && fast * 2 >= chains;
            // A storm building: failures and load rising together, with retries. Retries
            // without backoff are load themselves; clients that back off during a provider's
            // bad spell are what retries are for, so with backoff only the first attempts
            // count as load, and a bad spell alone (failures, but no more first attempts) is
            // left to the provider/model alert.
            let previous = state.and_then(|s| previous_minute(s, row, now_s));
            let window = Window::new(row, retries.copied(), previous);
            let building = (chains >= 2)
                .then(|| {
                    let state = (*state)?;
                    self.storm_building(data, row, state, retries.copied(), now_s, no_backoff)
                })
                .flatten();
            if window.requests < cfg.min_requests as f64 && building.is_none() {
                continue;
            }
            let (in_window, amplification_low) = window.amplification();
            let share = window.share();
            // The share must be clear of the threshold given how few requests the window holds.
            let share_low = window.share_low();
            if share_low < cfg.retry_share
                && amplification_low < cfg.amplification
                && building.is_none()
            {
                continue;
            }
            // How bad it is: the worse of the window and the minute alone (a storm that has
            // just started is diluted in the window).
            let amplification =
                in_window.max(Window::new(row, retries.copied(), None).amplification().0);
            let mut c = Candidate::new(
                Detector::RetryStorm,
                &[("api_key_id", &row.api_key_id), ("project", &row.project)],
                row.minute,
                row.minute + MINUTE,
            );
            // Whether to alert is judged on the lower bound; how bad it is, on what was seen.
            c.severity = if amplification >= cfg.critical_amplification
                || (no_backoff && amplification >= cfg.amplification)
            {
                Severity::Critical
            } else {
                Severity::Warning
            };
            (c.observed, c.expected, c.upper) = (amplification, 1.0, cfg.amplification);
            c.score = (1.0 - 1.0 / amplification.max(1.0)).max(share).min(1.0);
            c.summary =
                format!(
                "key {}: {:.1} attempts per successful request, {:.0} % of requests are retries{}",
                row.api_key_id,
                amplification,
                share * 100.0,
                if no_backoff { ", retried without backoff" } else { "" }
            );
            c.facts.insert("amplification".into(), json!(amplification));
            c.facts.insert("retry_share".into(), json!(share));
            c.facts.insert("retry_chains".into(), json!(chains));
            c.facts.insert("chains_without_backoff".into(), json!(fast));
            if let Some(b) = building {
                c.summary.push_str(&format!(
                    "; {:.0} % of answers are 429/5xx (usually {:.0} %) at {:.1}x its usual \
                     request rate",
                    100.0 * row.throttled as f64 / row.requests as f64,
                    100.0 * b.usual,
                    b.rate,
                ));
                c.facts.insert("request_rate_ratio".into(), json!(b.rate));
                if let Some(alone) = b.alone {
                    c.summary.push_str(&format!(
                        ", first attempts only; {:.0} % of its attempts to {} failed, the other \
                         keys' {:.0} % meanwhile",
                        100.0 * alone.own,
                        alone.provider,
                        100.0 * alone.others
                    ));
                    c.facts.insert("provider".into(), json!(alone.provider));
                    c.facts
                        .insert("others_failed_share".into(), json!(alone.others));
                }
            }
            // A key caught in its provider's trouble is the provider's alert, not its own.
            match self.caught_in_provider(data, row, &storms, now_s) {
                Some(Caught::Folded(i)) => storms[i].folded.push(row.api_key_id.clone()),
                Some(Caught::Held) => {}
                Some(Caught::Unclear) if surging(&window, *state, cfg.rate_rise) => out.push(c),
                Some(Caught::Unclear) => {
                    // Whose the failures are is told by waiting for the provider's alert.
                    let waiting = self.unclear.get(&row.api_key_id);
                    let waited = waiting.is_some_and(|w| now_s >= w.since + UNCLEAR_HELD_S);
                    if waiting.is_none() {
                        tracing::debug!(
                            key = %row.api_key_id,
                            "retry_storm: too few other keys on its provider/model to tell \
                             whose the failures are; waiting for the provider's alert"
                        );
                    } else if waited && waiting.is_some_and(|w| !w.paged) {
                        tracing::debug!(
                            key = %row.api_key_id,
                            waited_s = UNCLEAR_HELD_S,
                            "retry_storm: no provider alert took the key's storm in; it pages"
                        );
                    }
                    if waited {
                        out.push(c);
                    }
                    notes.unclear.push((row.api_key_id.clone(), waited));
                }
                None => out.push(c),
            }
        }
        notes.storms.extend(
            storms
                .iter()
                .map(|s| (s.provider.to_owned(), s.model.to_owned(), s.share)),
        );
        // Providers are watched by the worker that reads their minutes (shard 0).
        if !data.providers.is_empty() {
            for storm in &storms {
                out.push(storm.candidate(
                    cfg.critical_amplification,
                    cfg.provider_failure_rise,
                    now_s,
                ));
            }
        }
    }

    /// A storm building on a key: its requests (so far in the minute, pro rata; first attempts
    /// only unless `with_retries`) at `rate_rise` times its usual rate and its share of
    /// failures, by its Wilson lower bound, `failure_rise` above its usual share of 429/5xx
    /// answers. The failures are the gateway's 429/5xx answers or the failed upstream
    /// attempts, whichever share is higher: a gateway that retries upstream answers 200 in the
    /// end. When clients back off, `failure_rise` of its requests must be retries, and the key
    /// must fail alone: on one of its providers, `failure_rise` more than the other keys at
    /// the same time, while they fail less than that. A provider's bad spell that meets a
    /// busy moment of a key fails everyone alike; a key over its rate limit fails alone.
    fn storm_building(
        &self,
        data: &CycleData,
        row: &KeyMinute,
        state: &KeyState,
        retries: Option<&KeyRetries>,
        now_s: u32,
        with_retries: bool,
    ) -> Option<Building> {
        let cfg = &self.config.retry_storm;
        // Too little history to know the key's usual rate; too few requests to judge a share.
        if state.traffic.n < 10 || row.requests < 10 {
            return None;
        }
        // Pro rata over the part of the minute seen, but at least a quarter of it: the first
        // seconds of a minute say little about its rate. First attempts are judged over half
        // a minute at least: a busy moment of a few seconds that meets a provider's bad spell
        // is not load rising.
        let least = if with_retries { 0.25 } else { 0.5 };
        let seen = (f64::from(now_s.saturating_sub(row.minute)) / 60.0).clamp(least, 1.0);
        let load = if with_retries {
            row.requests
        } else {
            row.requests.saturating_sub(row.retries)
        };
        let rate = load as f64 / (state.traffic.mean.max(1.0) * seen);
        let usual = state.throttled.mean.clamp(0.0, 1.0);
        let answers_low = wilson_lower(row.throttled, row.requests, Z_95);
        let upstream_low = retries.map_or(0.0, |r| {
            let failed = r.provider_attempts.saturating_sub(r.provider_successes);
            wilson_lower(failed, r.provider_attempts, Z_95)
        });
        let failing_low = answers_low.max(upstream_low);
        if rate < cfg.rate_rise || failing_low < usual + cfg.failure_rise {
            return None;
        }
        let alone = if with_retries {
            None
        } else {
            // Backed-off retries must be a real part of the traffic: a gateway retrying
            // upstream for a key that sends a burst is not its clients storming.
            if (row.retries as f64) < cfg.failure_rise * row.requests as f64 {
                return None;
            }
            Some(fails_alone(data, row, cfg.failure_rise)?)
        };
        Some(Building { rate, usual, alone })
    }
}

/// What made a storm building: its request rate over the usual, the key's usual share of
/// 429/5xx, and with backoff, where it failed alone.
struct Building {
    rate: f64,
    usual: f64,
    alone: Option<FailingAlone>,
}

/// A provider a key failed on while the other keys on it did not: the key's failed share of
/// its attempts there and the others' meanwhile.
struct FailingAlone {
    provider: String,
    own: f64,
    others: f64,
}

/// A provider that served the other keys well (under `rise` of 429/5xx) while `row`'s key
/// failed on it `rise` more than they did (over all its models), in the 10 s buckets its
/// failures fall in, its own share by its Wilson lower bound. A provider failing everyone is the provider's alert.
/// Every failure of the key on the provider lies in those buckets but perhaps not every
/// attempt, so all its attempts are taken out: the others' share comes out high rather than
/// low. Providers the others called too little are passed over.
fn fails_alone(data: &CycleData, row: &KeyMinute, rise: f64) -> Option<FailingAlone> {
    let bucket_ms = i64::from(PROVIDER_BUCKET_S) * 1000;
    // The key's failures per provider, over its models (rows are per provider/model).
    let mut per_provider: Vec<KeyProviderFailures> = Vec::new();
    for f in data
        .key_failures
        .iter()
        .filter(|f| f.minute == row.minute && f.api_key_id == row.api_key_id)
    {
        match per_provider.iter_mut().find(|p| p.provider == f.provider) {
            Some(p) => {
                p.attempts += f.attempts;
                p.failures += f.failures;
                p.first_ms = p.first_ms.min(f.first_ms);
                p.last_ms = p.last_ms.max(f.last_ms);
            }
            None => per_provider.push(f.clone()),
        }
    }
    per_provider.iter().find_map(|own| {
        let (attempts, failed) = data
            .provider_buckets
            .iter()
            .filter(|b| {
                let start = i64::from(b.bucket) * 1000;
                b.minute == row.minute
                    && b.provider == own.provider
                    && start <= own.last_ms
                    && start + bucket_ms > own.first_ms
            })
            .fold((0, 0), |(a, f), b| (a + b.attempts, f + b.failures));
        let failed = failed.saturating_sub(own.failures);
        let attempts = attempts.saturating_sub(own.attempts).max(failed);
        let others = failed as f64 / attempts.max(1) as f64;
        (attempts >= PEER_MIN_ATTEMPTS
            && own.last_ms - own.first_ms >= FAILING_ALONE_MIN_MS
            && others < rise
            && wilson_lower(own.failures, own.attempts, Z_95) >= others + rise)
            .then(|| FailingAlone {
                provider: own.provider.clone(),
                own: own.failures as f64 / own.attempts as f64,
                others,
            })
    })
}

/// A key fails alone only for this long at least: a bad spell of a few seconds fills a small
/// part of a 10 s bucket, and a key retrying into it looks worse than the others in the
/// bucket, most of whose attempts fell outside it.
const FAILING_ALONE_MIN_MS: i64 = 20_000;

/// Fewer upstream attempts by the other keys than this say nothing of their provider.
const PEER_MIN_ATTEMPTS: u64 = 20;
