//! Incident injection: resolves each [`IncidentPlan`] against the keys (the ground truth), draws
//! the requests the incidents add, in time order, and tells the engine what becomes of a key's
//! own traffic meanwhile (silenced, moved abroad, caught in a retry storm).
//!
//! Each incident draws from a random stream of its own (the seed, stream 100 + its index), so
//! what it adds does not depend on the background; the engine serves the added requests like
//! any other (provider faults, latencies, ids), so the whole output is deterministic under the
//! seed. Injected requests never retry on the client side (except in retry storms, whose retries
//! are the point, and which stop 20 s before their window ends): every gateway event an incident
//! adds falls inside its window.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{
    distance_km, Country, HostingPool, Model, CLOUD_BLOCKS, COUNTRIES, MODELS, NEIGHBOURS,
};
use crate::faults::exponential;
use crate::incidents::{Incident, IncidentKind, IncidentPlan};
use crate::keys::{host_in, pick_split, KeyProfile};
use crate::resolve::{choose_spend, resolve, Resolved, SpendDraw};
use crate::traces::Trace;

/// Rate-driven incidents re-read their key's rate at least this often, in ms.
const STEP_MS: f64 = 1_000.0;

/// Where a request comes from when not from one of its key's own addresses.
#[derive(Debug)]
pub(crate) struct Origin {
    pub ip: String,
    pub country: &'static str,
    pub region: &'static str,
    pub user_agent: &'static str,
}

/// How a request is served.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// The background's ways: provider faults, one gateway retry, client retries with backoff.
    Normal,
    /// Added by an incident: faults and gateway retries as usual, no client retry.
    NoClientRetry,
    /// Under the retry storm of incident `.0`.
    Storm(usize),
    /// A key the gateway does not know (this `api_key_id`): 401 before any provider.
    UnknownKey(Arc<str>),
}

/// A request an incident adds, before the engine gives it ids.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub key: usize,
    pub model: &'static Model,
    /// Index into the key's users; `None` sends no `user` (scripts do not set one).
    pub user: Option<usize>,
    /// Index into the key's addresses, used when `origin` is `None`.
    pub ip: usize,
    pub origin: Option<Arc<Origin>>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stream: bool,
    pub mode: Mode,
}

/// What happens to one of a key's own requests.
#[derive(Debug)]
pub(crate) enum Background {
    Keep,
    /// The key is silent (not yet created, or between two countries).
    Drop,
    /// The key has moved: this request comes from there.
    Relocate(Arc<Origin>),
    Storm(usize),
    /// A price shift: the request goes to this model instead.
    Shift(&'static Model),
}

#[derive(Debug)]
pub(crate) struct StormSpec {
    pub backoff: bool,
    pub provider: &'static str,
    /// Only this model of the provider (a provider storm); `None`: any of its models.
    pub model: Option<&'static str>,
    /// A provider storm: every key's requests to the provider/model but `exempt`'s, at a
    /// constant failure probability; otherwise the incident's key only, climbing.
    pub wide: bool,
    pub exempt: Vec<usize>,
    /// A client retries a failure with this probability, up to this many attempts in all.
    pub client_retry_p: f64,
    pub max_client_attempts: u16,
    /// No new first attempts, and the key's own requests are spared, from here on, so that
    /// retry chains (at most 8 s) finish inside the window.
    pub cutoff_ms: i64,
    /// Failure probability of an upstream attempt at the storm's height.
    pub p_peak: f64,
}

/// Over an incident's window, how much of its full extra rate applies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    Flat,
    /// Linear from 0 at the start to 1 at the end.
    Ramp,
    /// Flat with one-minute linear edges (a job starting and draining).
    Soft,
    /// From 0.3 to 1 over the first quarter, then flat (load building up).
    Rise,
}

/// Extra requests on the incident's key, as a non-homogeneous Poisson process.
#[derive(Debug)]
pub(crate) struct RateSpec {
    /// Extra requests as a multiple of the key's own rate, at full shape ...
    pub extra_multiple: f64,
    /// ... but at least this many per ms.
    pub floor_per_ms: f64,
    pub shape: Shape,
    pub prompt_scale: f64,
    pub completion_scale: f64,
    /// Forced streaming flag (batch jobs do not stream); `None` keeps the key's habit.
    pub stream: Option<bool>,
    /// Forced model; `None` draws from the key's models.
    pub model: Option<&'static Model>,
    pub mode: Mode,
    /// No arrivals at or after this instant.
    pub stop_ms: i64,
}

#[derive(Debug)]
pub(crate) struct Relocation {
    pub silent_from_ms: i64,
    pub moved_at_ms: i64,
    /// One per address of the key: its `i`-th address becomes `origins[i]`.
    pub origins: Vec<Arc<Origin>>,
}

#[derive(Debug)]
struct Active {
    kind: IncidentKind,
    key: usize,
    start_ms: i64,
    end_ms: i64,
    rng: ChaCha8Rng,
    /// Pre-drawn requests, ascending in time, and the next one to hand out.
    schedule: Vec<(i64, Draft)>,
    pos: usize,
    rate: Option<RateSpec>,
    /// Next wake-up of the rate process (absolute ms), and whether it is an arrival or only a
    /// re-read of the rate.
    wake_at: f64,
    arrival: bool,
    storm: Option<StormSpec>,
    relocation: Option<Relocation>,
    /// A price shift's model for the key's own requests in the window.
    shift: Option<&'static Model>,
}

impl Active {
    fn next_ms(&self) -> Option<i64> {
        match &self.rate {
            Some(_) => self
                .wake_at
                .is_finite()
                .then(|| self.wake_at.floor() as i64),
            None => self.schedule.get(self.pos).map(|(t, _)| *t),
        }
    }

    fn shape(&self, t_ms: f64) -> f64 {
        let (start, end) = (self.start_ms as f64, self.end_ms as f64);
        let tau = ((t_ms - start) / (end - start)).clamp(0.0, 1.0);
        match self.rate.as_ref().map_or(Shape::Flat, |r| r.shape) {
            Shape::Flat => 1.0,
            Shape::Ramp => tau,
            Shape::Soft => ((t_ms - start) / 60_000.0)
                .min((end - t_ms) / 60_000.0)
                .clamp(0.0, 1.0),
            Shape::Rise => 0.3 + 0.7 * (tau / 0.25).min(1.0),
        }
    }
}

/// What resolving needs from the engine.
pub(crate) struct Context<'a> {
    pub seed: u64,
    pub start_ms: i64,
    pub keys: &'a [KeyProfile],
    pub trace: &'a Trace,
    /// A key's own requests per minute at an instant, before any incident.
    pub per_min: &'a dyn Fn(usize, i64) -> f64,
}

/// The incidents of one run.
#[derive(Debug, Default)]
pub(crate) struct Injector {
    active: Vec<Active>,
    truth: Vec<Incident>,
    /// Per key, the incidents that change its own traffic.
    by_key: Vec<Vec<usize>>,
    /// Daily peaks: (start, end) in absolute ms.
    peaks: Vec<(i64, i64)>,
    /// Provider storms (indexes into `active`): they change every key's traffic.
    wide: Vec<usize>,
    /// The earliest next request of any incident: (ms, index).
    next: Option<(i64, usize)>,
    /// Per ground-truth incident, what a drawn spend incident was drawn with.
    draws: Vec<Option<SpendDraw>>,
}

impl Injector {
    /// Resolves the plans that make sense (a key that exists, a positive duration, a start not
    /// before the run's); the others are dropped and absent from the ground truth.
    pub fn new(plans: &[IncidentPlan], cx: &Context<'_>) -> Self {
        let mut out = Injector {
            by_key: vec![Vec::new(); cx.keys.len()],
            ..Injector::default()
        };
        let valid = |plan: &IncidentPlan| {
            plan.duration_ms > 0
                && plan.offset_ms >= 0
                && (!plan.kind.targets_key() || plan.key < cx.keys.len())
                && !cx.keys.is_empty()
        };
        let rng_of = |n: usize| {
            let mut rng = ChaCha8Rng::seed_from_u64(cx.seed);
            rng.set_stream(100 + n as u64);
            rng
        };
        // Drawn spend incidents first: one may move to a bigger key, which the others (the
        // keys a provider storm spares, the next spend incident's free keys) must know.
        let mut plans = plans.to_vec();
        let mut drawn: Vec<Option<(SpendDraw, ChaCha8Rng)>> = vec![None; plans.len()];
        for n in 0..plans.len() {
            if !valid(&plans[n]) || !plans[n].kind.is_drawn_spend() {
                continue;
            }
            let mut rng = rng_of(n);
            let draw = choose_spend(&plans, n, &mut rng, cx);
            plans[n].key = draw.key;
            drawn[n] = Some((draw, rng));
        }
        for (n, plan) in plans.iter().enumerate() {
            if !valid(plan) {
                continue;
            }
            let (draw, mut rng) = match drawn[n].take() {
                Some((draw, rng)) => (Some(draw), rng),
                None => (None, rng_of(n)),
            };
            let index = out.active.len();
            let busy = if plan.kind.is_provider_storm() {
                busy_near(&plans, n, cx)
            } else {
                Busy::default()
            };
            let Resolved {
                key,
                start_ms,
                end_ms,
                onset_ms,
                note,
                truth_key,
                schedule,
                rate,
                storm,
                relocation,
                shift,
            } = resolve(plan, index, &mut rng, cx, &busy, draw.as_ref());
            if plan.kind == IncidentKind::BenignDailyPeak {
                out.peaks.push((start_ms, end_ms));
            }
            if storm.as_ref().is_some_and(|s| s.wide) {
                out.wide.push(index);
            } else if storm.is_some()
                || relocation.is_some()
                || shift.is_some()
                || plan.kind == IncidentKind::BenignNewKey
            {
                out.by_key[key].push(index);
            }
            out.truth.push(Incident {
                kind: plan.kind,
                key: truth_key,
                start_ms,
                end_ms,
                onset_ms,
                note,
            });
            out.draws.push(draw);
            let wake_at = if rate.is_some() {
                start_ms as f64
            } else {
                f64::INFINITY
            };
            out.active.push(Active {
                kind: plan.kind,
                key,
                start_ms,
                end_ms,
                rng,
                schedule,
                pos: 0,
                rate,
                wake_at,
                arrival: false,
                storm,
                relocation,
                shift,
            });
        }
        out.refresh_next();
        out
    }

    pub fn truth(&self) -> &[Incident] {
        &self.truth
    }

    /// Per ground-truth incident, a drawn spend incident's figures (`None` for other kinds).
    #[cfg(test)]
    pub fn draws(&self) -> &[Option<SpendDraw>] {
        &self.draws
    }

    /// The earliest instant at which an incident wants serving, and which one.
    pub fn next(&self) -> Option<(i64, usize)> {
        self.next
    }

    /// The key incident `i` targets (its rate is what [`Injector::take`] needs).
    pub fn key_of(&self, i: usize) -> usize {
        self.active[i].key
    }

    /// Hands out incident `i`'s request due at [`Injector::next`] (or nothing, when that was
    /// only a re-read of the rate) and moves on. `per_min` is the key's own rate now.
    pub fn take(
        &mut self,
        i: usize,
        per_min: f64,
        keys: &[KeyProfile],
        trace: &Trace,
    ) -> Option<Draft> {
        let a = &mut self.active[i];
        let draft = if let Some(rate) = &a.rate {
            let now = a.wake_at;
            let draft = a
                .arrival
                .then(|| rate_draft(rate, a.key, &keys[a.key], trace, &mut a.rng));
            let lambda =
                a.shape(now) * (rate.extra_multiple * per_min / 60_000.0).max(rate.floor_per_ms);
            let gap = if lambda > 0.0 {
                exponential(&mut a.rng, 1.0 / lambda)
            } else {
                f64::INFINITY
            };
            // The rate is piecewise constant between wake-ups, and the exponential memoryless:
            // waking up without an arrival and drawing again is exact.
            (a.wake_at, a.arrival) = if gap <= STEP_MS {
                (now + gap, true)
            } else {
                (now + STEP_MS, false)
            };
            if a.wake_at >= rate.stop_ms as f64 {
                a.wake_at = f64::INFINITY;
            }
            draft
        } else {
            let draft = a.schedule.get(a.pos).map(|(_, d)| d.clone());
            a.pos += 1;
            draft
        };
        self.refresh_next();
        draft
    }

    fn refresh_next(&mut self) {
        self.next = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.next_ms().map(|t| (t, i)))
            .min();
    }

    /// What becomes of one of `key`'s own requests at `ts_ms` to `provider`'s `model` from its
    /// `ip`-th address.
    pub fn background(
        &self,
        key: usize,
        ts_ms: i64,
        provider: &str,
        model: &str,
        ip: usize,
    ) -> Background {
        for &i in &self.by_key[key] {
            let a = &self.active[i];
            if a.kind == IncidentKind::BenignNewKey && ts_ms < a.start_ms {
                return Background::Drop;
            }
            if let Some(r) = &a.relocation {
                if ts_ms > r.silent_from_ms && ts_ms < r.moved_at_ms {
                    return Background::Drop;
                }
                if ts_ms >= r.moved_at_ms {
                    return Background::Relocate(r.origins[ip % r.origins.len()].clone());
                }
            }
            if let Some(s) = &a.storm {
                if (a.start_ms..s.cutoff_ms).contains(&ts_ms) && s.provider == provider {
                    return Background::Storm(i);
                }
            }
            if let Some(m) = a.shift {
                if (a.start_ms..a.end_ms).contains(&ts_ms) {
                    return Background::Shift(m);
                }
            }
        }
        for &i in &self.wide {
            let a = &self.active[i];
            if let Some(s) = &a.storm {
                if (a.start_ms..s.cutoff_ms).contains(&ts_ms)
                    && s.provider == provider
                    && s.model.is_none_or(|m| m == model)
                    && !s.exempt.contains(&key)
                {
                    return Background::Storm(i);
                }
            }
        }
        Background::Keep
    }

    /// The daily peak's factor on every key's rate at `ts_ms`: a raised cosine from 1 to 2
    /// and back over each peak's window.
    pub fn peak_factor(&self, ts_ms: i64) -> f64 {
        self.peaks
            .iter()
            .filter(|(s, e)| (*s..*e).contains(&ts_ms))
            .map(|(s, e)| {
                let tau = (ts_ms - s) as f64 / (e - s) as f64;
                1.0 + 0.5 * (1.0 - (2.0 * std::f64::consts::PI * tau).cos())
            })
            .product()
    }

    pub fn storm(&self, i: usize) -> Option<&StormSpec> {
        self.active[i].storm.as_ref()
    }

    /// Probability that an upstream attempt fails in storm `i` at `ts_ms`, for the client's
    /// `attempt`: it climbs from half to full height over the first quarter of the window
    /// (errors rise with the load); with backoff, each retry meets a provider that had time to
    /// recover (×0.6 per attempt). A provider storm fails at its height throughout.
    pub fn storm_fail_p(&self, i: usize, ts_ms: f64, attempt: u16) -> f64 {
        let a = &self.active[i];
        let Some(s) = &a.storm else { return 0.0 };
        if s.wide {
            // A provider failing is failing for every attempt alike, retries included.
            return s.p_peak;
        }
        let tau = ((ts_ms - a.start_ms as f64) / (a.end_ms - a.start_ms) as f64).clamp(0.0, 1.0);
        let p = s.p_peak * (0.5 + 0.5 * (tau / 0.25).min(1.0));
        if s.backoff {
            p * 0.6f64.powi(i32::from(attempt) - 1)
        } else {
            p
        }
    }
}

/// One request of a rate-driven incident, with the key's own habits and scaled tokens.
fn rate_draft(
    rate: &RateSpec,
    key: usize,
    profile: &KeyProfile,
    trace: &Trace,
    rng: &mut ChaCha8Rng,
) -> Draft {
    let model = rate
        .model
        .unwrap_or_else(|| &MODELS[profile.models[pick_split(rng, profile.models.len())]]);
    let row = trace.rows[rng.random_range(0..trace.rows.len())];
    let scale = |n: u32, by: f64, cap: f64| (f64::from(n) * by).round().min(cap) as u32;
    Draft {
        key,
        model,
        user: Some(pick_split(rng, profile.users.len())),
        ip: pick_split(rng, profile.ips.len()),
        origin: None,
        prompt_tokens: scale(row.prompt_tokens, rate.prompt_scale, 200_000.0),
        completion_tokens: scale(row.completion_tokens, rate.completion_scale, 16_000.0),
        stream: rate
            .stream
            .unwrap_or_else(|| rng.random_bool(profile.stream_p)),
        mode: rate.mode.clone(),
    }
}

/// A request of the key's own kind (model, user, address, tokens, streaming), as the
/// schedules of impossible travel and the slow move use.
pub(crate) fn own_draft(
    key: usize,
    profile: &KeyProfile,
    trace: &Trace,
    rng: &mut ChaCha8Rng,
    origin: Option<Arc<Origin>>,
) -> Draft {
    let rate = RateSpec {
        extra_multiple: 0.0,
        floor_per_ms: 0.0,
        shape: Shape::Flat,
        prompt_scale: 1.0,
        completion_scale: 1.0,
        stream: None,
        model: None,
        mode: Mode::NoClientRetry,
        stop_ms: 0,
    };
    Draft {
        origin,
        ..rate_draft(&rate, key, profile, trace, rng)
    }
}

/// An address in a hosting pool.
pub(crate) fn pool_ip(rng: &mut ChaCha8Rng, pool: &HostingPool) -> String {
    let range = pool.ranges[rng.random_range(0..pool.ranges.len())];
    host_in(rng, range)
}

/// An address of one of the country's ISPs (not a cloud).
pub(crate) fn isp_ip(rng: &mut ChaCha8Rng, country: &Country) -> String {
    let isp: Vec<[u8; 2]> = country
        .blocks
        .iter()
        .copied()
        .filter(|b| !CLOUD_BLOCKS.contains(b))
        .collect();
    let [a, b] = isp[rng.random_range(0..isp.len())];
    host_in(rng, [a, b, 0, 255])
}

/// An address anywhere in the country's blocks.
pub(crate) fn any_ip(rng: &mut ChaCha8Rng, country: &Country) -> String {
    let [a, b] = country.blocks[rng.random_range(0..country.blocks.len())];
    host_in(rng, [a, b, 0, 255])
}

/// Countries other than `home` with their distance from it, in catalog order; with
/// `neighbours`, also the countries no key lives in.
pub(crate) fn others(home: &str, neighbours: bool) -> Vec<(&'static Country, f64)> {
    let extra = if neighbours { NEIGHBOURS } else { &[] };
    COUNTRIES
        .iter()
        .chain(extra)
        .filter(|c| c.code != home)
        .filter_map(|c| distance_km(home, c.code).map(|d| (c, d)))
        .collect()
}

/// Keys a provider storm spares (under another incident within 10 minutes of its window, or
/// for good), and models it avoids (those a key's retry storm fails on then).
#[derive(Debug, Default)]
pub(crate) struct Busy {
    pub keys: Vec<usize>,
    pub models: Vec<usize>,
}

/// What is busy around plan `n`'s window.
fn busy_near(plans: &[IncidentPlan], n: usize, cx: &Context<'_>) -> Busy {
    const GAP_MS: i64 = 10 * 60_000;
    let storm = &plans[n];
    let (from, to) = (
        storm.offset_ms - GAP_MS,
        storm.offset_ms + storm.duration_ms + GAP_MS,
    );
    let mut busy = Busy::default();
    for (m, p) in plans.iter().enumerate() {
        if m == n || !p.kind.targets_key() || p.key >= cx.keys.len() {
            continue;
        }
        let end = match p.kind {
            // A new key keeps sending, a moved key stays abroad.
            IncidentKind::BenignNewKey | IncidentKind::BenignSlowRegionMove => i64::MAX,
            _ => p.offset_ms + p.duration_ms,
        };
        if p.offset_ms < to && end > from {
            busy.keys.push(p.key);
            if matches!(
                p.kind,
                IncidentKind::RetryStormNoBackoff | IncidentKind::RetryStormWithBackoff
            ) {
                busy.models.push(cx.keys[p.key].models[0]);
            }
        }
    }
    busy.keys.sort_unstable();
    busy.keys.dedup();
    busy
}
