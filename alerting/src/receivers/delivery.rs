//! The delivery policy, pure: what to do after an attempt, how long to wait, and how fast a
//! receiver may be sent to. The caller owns the clock and the random source, so every decision
//! is reproducible in tests and after a restart.
//!
//! - Each notification has its own budget ([`RetryPolicy::max_attempts`] and
//!   [`RetryPolicy::max_elapsed`] from its first attempt). Nothing else cuts it off: a new
//!   group_interval tick does not cancel a pending retry (Alertmanager's complaint).
//! - Waits grow exponentially with full jitter: `uniform(0, min(max_backoff, initial · 2^(n-1)))`
//!   after the n-th failed attempt, so receivers coming back are not hit by every sender at once.
//! - `Retry-After` (delay-seconds or HTTP-date) is honoured on 429 and 503: the next attempt is
//!   not earlier than the receiver asked.
//! - 400, 401, 403, 404 and 410 are configuration errors (wrong URL, token, channel): reported
//!   as [`Outcome::Permanent`] and not retried. So are 3xx (redirects are not followed: a signed
//!   body is not forwarded elsewhere) and SMTP 5xx replies. Other 4xx, 5xx and network errors
//!   are retried.
//! - [`RateLimiter`]: a token bucket per receiver (Slack incoming webhooks: 1 message/s).

use std::time::{Duration, Instant, SystemTime};

/// A receiver's `Retry-After` header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: 120`
    Delay(Duration),
    /// `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`
    At(SystemTime),
}

impl RetryAfter {
    /// Parses delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime). `None` when it
    /// is neither (the header is then ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Absurdly large values saturate; the retry budget decides what happens then.
            let secs = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(value).ok().map(RetryAfter::At)
    }

    /// How long from `now` (zero for a date in the past).
    pub fn delay_from(self, now: SystemTime) -> Duration {
        match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(t) => t.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// Why one delivery attempt failed. Messages never contain the receiver's URL or credentials
/// (Slack webhook URLs and SMTP passwords are secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered with a non-2xx HTTP status.
    #[error("receiver answered http {status}: {body}")]
    Status {
        status: u16,
        /// The `Retry-After` header, if any and parseable.
        retry_after: Option<RetryAfter>,
        /// The start of the response body (Slack explains its errors there), control
        /// characters removed.
        body: String,
    },
    /// Connection refused or reset, timeout, TLS handshake, a transient (4xx) SMTP reply: retried.
    #[error("transient delivery error: {0}")]
    Transient(String),
    /// Cannot succeed without a configuration change (invalid URL, SMTP 5xx, bad address,
    /// missing credentials): not retried.
    #[error("permanent delivery error: {0}")]
    Permanent(String),
}

impl DeliveryError {
    /// An HTTP response's error: `retry_after` is the raw `Retry-After` header.
    pub fn from_status(status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let (body, cut) = super::truncate_chars(body, 300);
        let mut body = super::one_line(body.trim());
        if cut {
            body.push('…');
        }
        DeliveryError::Status {
            status,
            retry_after: retry_after.and_then(RetryAfter::parse),
            body,
        }
    }

    /// Whether retrying can help.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::Status { status, .. } => is_permanent_status(*status),
            DeliveryError::Transient(_) => false,
            DeliveryError::Permanent(_) => true,
        }
    }
}

/// 400, 401, 403, 404, 410 (and 3xx, which are not followed): the receiver is misconfigured.
pub fn is_permanent_status(status: u16) -> bool {
    matches!(status, 300..=399 | 400 | 401 | 403 | 404 | 410)
}

/// What to do with a notification after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Try again after this long.
    Retry {
        after: Duration,
    },
    /// A configuration error: report it (metrics, `notifications` table, logs) and stop.
    Permanent {
        reason: String,
    },
    /// The budget is spent (attempts or time); `reason` is the last error.
    GaveUp {
        reason: String,
    },
}

/// A notification's retry budget and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No retry is scheduled later than this after the first attempt.
    pub max_elapsed: Duration,
    /// The backoff ceiling after the first failure; it doubles per failure.
    pub initial_backoff: Duration,
    /// The backoff ceiling's cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 1 s doubling to 60 s, for up to an hour or 50 attempts: a receiver down for a deploy or
    /// an outage still gets the notification, a dead one stops being tried within the hour.
    fn default() -> Self {
        Self {
            max_attempts: 50,
            max_elapsed: Duration::from_secs(3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after `failures` failed attempts (1 = after the first):
    /// `min(max_backoff, initial_backoff · 2^(failures-1))`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        2u32.checked_pow(failures.saturating_sub(1))
            .and_then(|factor| self.initial_backoff.checked_mul(factor))
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff)
    }

    /// Full jitter: uniform in `[0, backoff_ceiling(failures)]`. `random` returns a number in
    /// `[0, 1)` (e.g. `|| rng.random::<f64>()`); values outside are clamped.
    pub fn backoff(&self, failures: u32, random: &mut impl FnMut() -> f64) -> Duration {
        let r = random();
        let r = if r.is_finite() {
            r.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = self.backoff_ceiling(failures);
        // Not `mul_f64`: it panics when a huge ceiling rounds above Duration::MAX.
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * r)
            .unwrap_or(ceiling)
            .min(ceiling)
    }

    /// Decides after attempt number `attempts` (1 = the first) of a notification first tried at
    /// `first_attempt_at`, which ended with `result` at `now`.
    pub fn decide(
        &self,
        result: &Result<(), DeliveryError>,
        attempts: u32,
        first_attempt_at: SystemTime,
        now: SystemTime,
        random: &mut impl FnMut() -> f64,
    ) -> Outcome {
        let err = match result {
            Ok(()) => return Outcome::Delivered,
            Err(err) => err,
        };
        if err.is_permanent() {
            return Outcome::Permanent {
                reason: format!("configuration error, not retried: {err}"),
            };
        }
        if attempts >= self.max_attempts {
            return Outcome::GaveUp {
                reason: format!("{attempts} attempts: {err}"),
            };
        }
        let after = match err {
            DeliveryError::Status {
                status: 429 | 503,
                retry_after: Some(ra),
                ..
            } => ra.delay_from(now),
            _ => self.backoff(attempts, random),
        };
        // A clock that went backwards counts as no time elapsed.
        let elapsed = now.duration_since(first_attempt_at).unwrap_or_default();
        if elapsed.saturating_add(after) > self.max_elapsed {
            return Outcome::GaveUp {
                reason: format!(
                    "retry budget of {}s spent after {attempts} attempts: {err}",
                    self.max_elapsed.as_secs()
                ),
            };
        }
        Outcome::Retry { after }
    }
}

/// A token bucket: `burst` messages at once, refilled at `per_second`. One per receiver.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimiter {
    /// `per_second` > 0 (a non-positive or non-finite rate is treated as 1/s); `burst` ≥ 1.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Slack incoming webhooks: one message per second, no burst.
    pub fn slack() -> Self {
        Self::new(1.0, 1)
    }

    /// Takes a token at `now`, or says how long until one is available (then call again).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        }
        // `now` earlier than `last` (callers racing) leaves `last` where it was.
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
