//! How a provider answers an attempt: whether it fails (a steady trickle, plus bursts while the
//! provider is degraded) and how long it takes.
//!
//! Real error traffic is not independent per request: a provider has an incident (a capacity
//! crunch, a bad deploy) and for some seconds a large part of its requests fail together, then
//! it recovers. Detectors must tell those bursts from the background rate, so the simulator
//! produces both. Each provider alternates between healthy spells (exponentially distributed, so
//! incidents start as a Poisson process in time, independent of the request rate) and degraded
//! spells of 3-30 s during which 20-40 % of its attempts fail and the rest run slower.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::PROVIDERS;
use crate::keys::pick_weighted;

/// Share of attempt failures that come from degraded spells; the rest is background.
const BURST_SHARE: f64 = 0.35;
/// Failure probability during a degraded spell is drawn from this range.
const BURST_FAIL_P: (f64, f64) = (0.2, 0.4);
/// Length of a degraded spell, in ms.
const INCIDENT_MS: (i64, i64) = (3_000, 30_000);
/// The gateway's internal retry turns part of the failed attempts into a gateway 200, and client
/// retries add events that fail more often than first attempts. Attempt-level probabilities are
/// raised as if this share of failures were rescued, so that the gateway-visible failure share
/// matches `SimConfig::failure_rate`. Calibrated, not derived: with 0.33 and a 1.8 % target,
/// three seeds × 1M gateway events (5 req/s, about 55 h each) measured 1.79-1.84 %.
/// Re-measure after changing any failure or retry constant.
const RESCUED_SHARE: f64 = 0.33;

/// Longest latency of one attempt, in ms (gateways time out long generations).
const MAX_LATENCY_MS: f64 = 120_000.0;

/// Background failures from providers: (status, error_type, weight).
const BACKGROUND: &[(u16, &str, f64)] = &[
    (429, "rate_limit", 35.0),
    (500, "server_error", 15.0),
    (502, "server_error", 8.0),
    (503, "overloaded", 20.0),
    (400, "bad_request", 14.0),
];
/// Weight of 401s among background failures, on the scale of [`BACKGROUND`]. The gateway
/// answers them itself (a revoked or mistyped virtual key) before calling any provider.
const AUTH_WEIGHT: f64 = 8.0;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: u16,
    pub error_type: &'static str,
    /// Set on 429s: how long the provider asks the caller to wait.
    pub retry_after_ms: Option<u32>,
}

impl Failure {
    /// Clients and the gateway retry rate limits and server-side errors, never 4xx they caused.
    pub fn retryable(&self) -> bool {
        self.status == 429 || self.status >= 500
    }
}

/// The outcome of one provider attempt at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    pub failure: Option<Failure>,
    /// Latency multiplier for attempts that succeed (a degraded provider is also slow).
    pub slowdown: f64,
}

#[derive(Debug, Clone, Copy)]
enum Incident {
    RateLimit,
    Overloaded,
    ServerError,
}

#[derive(Debug)]
struct Health {
    next_incident_ms: f64,
    degraded_from_ms: f64,
    degraded_until_ms: f64,
    incident: Incident,
    fail_p: f64,
    slowdown: f64,
}

/// Per-provider health over simulated time (ms since the simulation's start).
#[derive(Debug)]
pub(crate) struct Faults {
    health: Vec<Health>,
    background_p: f64,
    auth_p: f64,
    /// Mean healthy spell between two incidents, in ms; infinite when failures are off.
    mean_healthy_ms: f64,
}

impl Faults {
    pub fn new(rng: &mut ChaCha8Rng, failure_rate: f64) -> Self {
        let attempt_rate = (failure_rate / (1.0 - RESCUED_SHARE)).clamp(0.0, 0.9);
        let mean_burst_p = (BURST_FAIL_P.0 + BURST_FAIL_P.1) / 2.0;
        // Fraction of time a provider is degraded so that bursts give BURST_SHARE of failures.
        let degraded = (attempt_rate * BURST_SHARE / mean_burst_p).min(0.5);
        let background = attempt_rate * (1.0 - BURST_SHARE);
        let total_weight = AUTH_WEIGHT + BACKGROUND.iter().map(|b| b.2).sum::<f64>();
        let auth_p = background * AUTH_WEIGHT / total_weight;
        let background_p = (background - auth_p) / (1.0 - degraded);
        let mean_incident_ms = (INCIDENT_MS.0 + INCIDENT_MS.1) as f64 / 2.0;
        let mean_healthy_ms = if degraded > 0.0 {
            mean_incident_ms * (1.0 - degraded) / degraded
        } else {
            f64::INFINITY
        };
        let health = PROVIDERS
            .iter()
            .map(|_| Health {
                next_incident_ms: exponential(rng, mean_healthy_ms),
                degraded_from_ms: f64::NEG_INFINITY,
                degraded_until_ms: f64::NEG_INFINITY,
                incident: Incident::Overloaded,
                fail_p: 0.0,
                slowdown: 1.0,
            })
            .collect();
        Self {
            health,
            background_p,
            auth_p,
            mean_healthy_ms,
        }
    }

    /// Whether the gateway refuses a client attempt as unauthorised (401), before any provider.
    pub fn gateway_rejects(&self, rng: &mut ChaCha8Rng) -> Option<Failure> {
        rng.random_bool(self.auth_p.min(1.0))
            .then_some(failure(401, "auth"))
    }

    /// Decides one attempt to `provider` at `t_ms`. Calls come in nearly non-decreasing time: the
    /// engine serves requests in start order, but a request's internal retry runs up to a few
    /// seconds ahead. Spells are drawn forward only, so a call that lands before the current
    /// spell's start sees the provider healthy.
    pub fn attempt(&mut self, rng: &mut ChaCha8Rng, provider: usize, t_ms: f64) -> Verdict {
        let mean_healthy_ms = self.mean_healthy_ms;
        let h = &mut self.health[provider];
        while t_ms >= h.next_incident_ms {
            h.degraded_from_ms = h.next_incident_ms;
            h.degraded_until_ms =
                h.degraded_from_ms + rng.random_range(INCIDENT_MS.0..=INCIDENT_MS.1) as f64;
            h.incident = match rng.random_range(0..20) {
                0..=8 => Incident::RateLimit,
                9..=15 => Incident::Overloaded,
                _ => Incident::ServerError,
            };
            h.fail_p = rng.random_range(BURST_FAIL_P.0..BURST_FAIL_P.1);
            h.slowdown = rng.random_range(1.3..2.5);
            h.next_incident_ms = h.degraded_until_ms + exponential(rng, mean_healthy_ms);
        }
        let degraded = (h.degraded_from_ms..h.degraded_until_ms).contains(&t_ms);
        if degraded && rng.random_bool(h.fail_p) {
            return Verdict {
                failure: Some(incident_failure(rng, h.incident)),
                slowdown: h.slowdown,
            };
        }
        let failure = rng
            .random_bool(self.background_p.min(1.0))
            .then(|| background_failure(rng));
        Verdict {
            failure,
            slowdown: if degraded { h.slowdown } else { 1.0 },
        }
    }
}

/// Duration of one provider attempt, in ms. Successes take time to first token plus decoding,
/// which is what makes latency track tokens (and a degraded provider is slower); failures return
/// early, each kind at its own pace.
pub(crate) fn attempt_latency_ms(
    rng: &mut ChaCha8Rng,
    verdict: Verdict,
    prompt_tokens: u32,
    completion_tokens: u32,
    ms_per_token: f64,
) -> f64 {
    let ms = match verdict.failure.map(|f| f.status) {
        None => {
            let base = 200.0
                + 15.0 * f64::from(prompt_tokens) / 1000.0
                + ms_per_token * f64::from(completion_tokens);
            base * verdict.slowdown * rng.random_range(0.8..1.25)
        }
        Some(429) => rng.random_range(20.0..150.0),
        Some(400) => rng.random_range(30.0..300.0),
        Some(503) => rng.random_range(50.0..1_000.0),
        Some(502) => rng.random_range(200.0..5_000.0),
        Some(_) => rng.random_range(300.0..3_000.0),
    };
    ms.min(MAX_LATENCY_MS)
}

fn incident_failure(rng: &mut ChaCha8Rng, incident: Incident) -> Failure {
    match incident {
        Incident::RateLimit => rate_limited(rng),
        Incident::Overloaded if rng.random_bool(0.9) => failure(503, "overloaded"),
        Incident::Overloaded => failure(502, "server_error"),
        Incident::ServerError if rng.random_bool(0.7) => failure(500, "server_error"),
        Incident::ServerError => failure(502, "server_error"),
    }
}

fn background_failure(rng: &mut ChaCha8Rng) -> Failure {
    let (status, error_type, _) = BACKGROUND[pick_weighted(rng, BACKGROUND.iter().map(|b| b.2))];
    if status == 429 {
        rate_limited(rng)
    } else {
        failure(status, error_type)
    }
}

fn rate_limited(rng: &mut ChaCha8Rng) -> Failure {
    Failure {
        status: 429,
        error_type: "rate_limit",
        // Providers answer in whole or tenth seconds; 1-4 s is typical for per-minute quotas.
        retry_after_ms: Some(rng.random_range(10..=40) * 100),
    }
}

fn failure(status: u16, error_type: &'static str) -> Failure {
    Failure {
        status,
        error_type,
        retry_after_ms: None,
    }
}

/// An exponentially distributed duration with the given mean (infinite mean → never).
pub(crate) fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    if !mean.is_finite() {
        return f64::INFINITY;
    }
    // 1 - u lies in (0, 1], so the logarithm is finite.
    -mean * (1.0 - rng.random::<f64>()).ln()
}
