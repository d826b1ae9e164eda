//! Turns one [`IncidentPlan`] into concrete parameters (addresses, countries, rates, the requests
//! to add) and its line of ground truth, whose note states the figures a reviewer checks.

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tripline_core::time::format_ms;

use crate::catalog::{Model, ATTACKER_UA, EXPENSIVE_MODEL, HOSTING_POOLS, MODELS, SCANNER_UA};
use crate::incidents::{IncidentKind, IncidentPlan};
use crate::inject::{
    any_ip, isp_ip, others, own_draft, pool_ip, Busy, Context, Draft, Mode, Origin, RateSpec,
    Relocation, Shape, StormSpec,
};
use crate::keys::KeyProfile;
use crate::traces::Trace;

mod spend;

pub(crate) use spend::{choose_spend, SpendDraw};
use spend::{drawn_spend, usd_per_request};

const MIN: i64 = 60_000;
/// A slow move is at most this fast (an airliner's pace, well under the detector's 1,000).
pub(crate) const SLOW_MOVE_MAX_KMH: f64 = 700.0;
/// The planned batch makes requests at most this much longer than the trace's (on top of its
/// own scaling) before it makes more of them.
const MAX_TOKEN_SCALE: f64 = 8.0;
/// Impossible travel goes at least this far.
const FAR_KM: f64 = 8_000.0;
/// Impossible travel alternates between home and abroad this often.
const TRAVEL_SEGMENT_MS: i64 = 150_000;
/// Retry storms: probability that a client goes on retrying after a failure.
const STORM_RETRY_P: f64 = 0.97;
/// Provider storms without backoff: the share of clients that retry a failure (at once).
const PROVIDER_STORM_RETRY_P: f64 = 0.5;
/// Provider storms: the failed share of upstream attempts is drawn from this range.
const PROVIDER_STORM_FAIL_P: (f64, f64) = (0.3, 0.9);

pub(crate) struct Resolved {
    pub key: usize,
    pub start_ms: i64,
    pub end_ms: i64,
    /// When the incident begins to count (the window start unless set otherwise).
    pub onset_ms: i64,
    pub note: String,
    pub truth_key: String,
    pub schedule: Vec<(i64, Draft)>,
    pub rate: Option<RateSpec>,
    pub storm: Option<StormSpec>,
    pub relocation: Option<Relocation>,
    /// A price shift: the key's own requests go to this model in the window.
    pub shift: Option<&'static Model>,
}

/// `busy`: what a provider storm must leave alone (see [`crate::inject::Injector::new`]);
/// `spend`: a drawn spend incident's figures (from [`choose_spend`], on `plan.key`).
pub(crate) fn resolve(
    plan: &IncidentPlan,
    index: usize,
    rng: &mut ChaCha8Rng,
    cx: &Context<'_>,
    busy: &Busy,
    spend: Option<&SpendDraw>,
) -> Resolved {
    use IncidentKind::*;
    let key = if plan.kind.targets_key() { plan.key } else { 0 };
    let k = &cx.keys[key];
    let start = cx.start_ms + plan.offset_ms;
    let end = start + plan.duration_ms;
    let mut r = Resolved {
        key,
        start_ms: start,
        end_ms: end,
        onset_ms: start,
        note: String::new(),
        truth_key: k.id.clone(),
        schedule: Vec::new(),
        rate: None,
        storm: None,
        relocation: None,
        shift: None,
    };
    let minutes = plan.duration_ms / MIN;
    let id = &k.id;
    match plan.kind {
        SpendSpikeSmall | SpendSpikeLarge | SpendRamp | SpendPriceShift => {
            let d = spend.expect("drawn spend incidents come with their draw");
            drawn_spend(&mut r, plan, k, d);
        }
        BenignPlannedBatch => {
            let (multiple, floor_usd, ps, cs) = (10.0, 4.0, 3.0, 1.0);
            let base_req = (cx.per_min)(key, (start + end) / 2);
            let base_usd = base_req * usd_per_request(k, cx.trace, 1.0, 1.0);
            // The extra spend clears $4 a minute: a key of cheap models or few requests gets
            // longer requests first (up to 8x the tokens), more of them only after that.
            let extra = (multiple - 1.0) * base_req;
            let usd_plain = usd_per_request(k, cx.trace, ps, cs);
            let tokens = (floor_usd / (extra * usd_plain).max(1e-12)).clamp(1.0, MAX_TOKEN_SCALE);
            let (ps, cs) = (ps * tokens, cs * tokens);
            let usd_req = usd_plain * tokens;
            let extra_req = extra.max(floor_usd / usd_req);
            let extra_usd = extra_req * usd_req;
            r.rate = Some(RateSpec {
                extra_multiple: multiple - 1.0,
                floor_per_ms: floor_usd / usd_req / 60_000.0,
                shape: Shape::Soft,
                prompt_scale: ps,
                completion_scale: cs,
                stream: Some(false),
                model: None,
                mode: Mode::NoClientRetry,
                stop_ms: end,
            });
            let times = 1.0 + extra_req / base_req.max(1e-9);
            let per_min = base_usd + extra_usd;
            r.note = format!(
                "planned batch job, budget raised: {id} runs a non-streaming batch \
                 ({times:.1}x its requests, {ps:.1}x prompt tokens) for {minutes} min, \
                 about +${extra_usd:.2}/min (${:.0}/h) over its ${base_usd:.2}/min; \
                 suppressed by the per-key spend_spike override [detect.keys.\"{id}\"] \
                 min_abs_usd = {:.0}, hourly_budget_usd = {:.0}",
                60.0 * per_min,
                (2.0 * per_min).ceil(),
                (90.0 * per_min).ceil()
            );
        }
        RetryStormNoBackoff | RetryStormWithBackoff => {
            let backoff = plan.kind == RetryStormWithBackoff;
            let model = &MODELS[k.models[0]];
            let cutoff = (end - 20_000).max(start);
            let p_peak = if backoff { 0.7 } else { 0.85 };
            r.rate = Some(RateSpec {
                extra_multiple: 2.0,
                floor_per_ms: 1.0 / 1_000.0,
                shape: Shape::Rise,
                prompt_scale: 1.0,
                completion_scale: 1.0,
                stream: None,
                model: Some(model),
                mode: Mode::Storm(index),
                stop_ms: cutoff,
            });
            r.storm = Some(StormSpec {
                backoff,
                provider: model.provider,
                model: None,
                wide: false,
                exempt: Vec::new(),
                client_retry_p: STORM_RETRY_P,
                max_client_attempts: if backoff { 5 } else { 6 },
                cutoff_ms: cutoff,
                p_peak,
            });
            let (provider, name) = (model.provider, model.name);
            r.note = if backoff {
                format!(
                    "size small (lower severity): {id}'s requests to {provider} ({name}) meet \
                     429/503 (up to {:.0} % of first attempts) for {minutes} min, but clients back \
                     off 0.5, 1, 2, 4 s (attempts up to 5, same idempotency_key) and the gateway \
                     does not retry: a retry storm by retry share, amplification about 2",
                    100.0 * p_peak
                )
            } else {
                format!(
                    "size large: {id}'s requests to {provider} ({name}) meet 429/503 (up to \
                     {:.0} % of upstream attempts) for {minutes} min while its first attempts \
                     rise to 3x; clients retry at once (5-40 ms after each failure, attempts up \
                     to 6, same idempotency_key) and the gateway retries upstream up to 3 times: \
                     provider attempts per success above 3",
                    100.0 * p_peak
                )
            };
        }
        ProviderStormNoBackoff | ProviderStormWithBackoff => {
            provider_storm(&mut r, plan, rng, cx, busy)
        }
        LeakedKeyProbeThenBurst => leaked(&mut r, k, cx.trace, rng, plan.duration_ms),
        KeyScanning => scanning(&mut r, rng),
        ImpossibleTravel => travel(&mut r, k, cx.trace, rng),
        BenignSlowRegionMove => slow_move(&mut r, k, cx.trace, rng, plan.duration_ms),
        BenignNewKey => {
            r.note = format!(
                "new key: {id} ({}, {}) sends nothing before this window, then its usual traffic \
                 (about {:.0} requests/min) from {} only; being new must not alert",
                k.project,
                k.country,
                (cx.per_min)(key, start),
                k.country
            );
        }
        BenignDailyPeak => {
            r.truth_key = "*".to_owned();
            r.note = format!(
                "every key's request rate rises smoothly to 2x at {} and back over {minutes} min \
                 (a raised cosine), like a daily peak",
                format_ms((start + end) / 2)
            );
        }
    }
    r
}

/// A provider storm: the provider/model with the most requests from the keys free at the time
/// (avoiding the models of retry storms then) fails for all of them.
fn provider_storm(
    r: &mut Resolved,
    plan: &IncidentPlan,
    rng: &mut ChaCha8Rng,
    cx: &Context<'_>,
    busy: &Busy,
) {
    const SPLIT: [f64; 4] = [0.6, 0.25, 0.1, 0.05];
    let backoff = plan.kind == IncidentKind::ProviderStormWithBackoff;
    let mid = (r.start_ms + r.end_ms) / 2;
    let free = |i: &usize| !busy.keys.contains(i);
    // Requests a minute per model from the free keys, at the window's middle.
    let mut traffic = vec![0.0; MODELS.len()];
    for (i, k) in cx.keys.iter().enumerate().filter(|(i, _)| free(i)) {
        let weights = &SPLIT[..k.models.len().min(SPLIT.len())];
        let total: f64 = weights.iter().sum();
        let rate = (cx.per_min)(i, mid);
        for (w, &m) in weights.iter().zip(&k.models) {
            traffic[m] += rate * w / total;
        }
    }
    let chosen = (0..MODELS.len())
        .filter(|m| !busy.models.contains(m))
        .max_by(|a, b| traffic[*a].total_cmp(&traffic[*b]))
        .unwrap_or(0);
    let model = &MODELS[chosen];
    let p = rng.random_range(PROVIDER_STORM_FAIL_P.0..PROVIDER_STORM_FAIL_P.1);
    r.storm = Some(StormSpec {
        backoff,
        provider: model.provider,
        model: Some(model.name),
        wide: true,
        exempt: busy.keys.clone(),
        client_retry_p: if backoff {
            STORM_RETRY_P
        } else {
            PROVIDER_STORM_RETRY_P
        },
        max_client_attempts: if backoff { 5 } else { 3 },
        cutoff_ms: (r.end_ms - 20_000).max(r.start_ms),
        p_peak: p,
    });
    let (provider, name) = (model.provider, model.name);
    r.truth_key = format!("{provider}/{name}");
    // Upstream attempts per original request: the gateway's tries (three at once without
    // backoff, one with), times the client's.
    let amplification = if backoff {
        (0..5).map(|n| (STORM_RETRY_P * p).powi(n)).sum::<f64>()
    } else {
        let gateway_fails = p.powi(3);
        (1.0 + p + p * p)
            * (0..3)
                .map(|n| (PROVIDER_STORM_RETRY_P * gateway_fails).powi(n))
                .sum::<f64>()
    };
    let caught: Vec<&str> = cx
        .keys
        .iter()
        .enumerate()
        .filter(|(i, k)| free(i) && k.models.contains(&chosen))
        .map(|(_, k)| k.id.as_str())
        .collect();
    let spared: Vec<&str> = busy.keys.iter().map(|&i| cx.keys[i].id.as_str()).collect();
    let minutes = plan.duration_ms / MIN;
    let how = if backoff {
        "the gateway does not retry and clients back off 0.5, 1, 2, 4 s (up to 5 attempts, \
         same idempotency_key)"
    } else {
        "the gateway retries at once (up to 3 upstream attempts) and half of the clients retry \
         at once too (up to 3 attempts, same idempotency_key)"
    };
    r.note = format!(
        "provider storm{}: {provider}/{name} answers {:.0} % of upstream attempts 429/503 for \
         {minutes} min, for every key calling it ({} keys, about {:.0} requests/min: {}{}); {how}: \
         about {amplification:.1}x the upstream attempts per request. The answer is the \
         provider/model's retry_storm alert; key-level storm alerts of the keys caught in it are \
         not. Spared (under another incident near its time): {}",
        if backoff {
            " with backoff (lower severity)"
        } else {
            " without backoff"
        },
        100.0 * p,
        caught.len(),
        traffic[chosen],
        caught[..caught.len().min(5)].join(", "),
        if caught.len() > 5 { ", ..." } else { "" },
        if spared.is_empty() {
            "none".to_owned()
        } else {
            spared.join(", ")
        },
    );
}

/// Sorted instants uniform in `[from, to)`.
fn uniform_times(rng: &mut ChaCha8Rng, n: usize, from: i64, to: i64) -> Vec<i64> {
    let mut t: Vec<i64> = (0..n)
        .map(|_| rng.random_range(from..to.max(from + 1)))
        .collect();
    t.sort_unstable();
    t
}

fn leaked(r: &mut Resolved, k: &KeyProfile, trace: &Trace, rng: &mut ChaCha8Rng, window: i64) {
    let pools: Vec<_> = HOSTING_POOLS
        .iter()
        .filter(|p| p.country != k.country)
        .collect();
    let pool = pools[rng.random_range(0..pools.len())];
    let origin = |rng: &mut ChaCha8Rng| {
        Arc::new(Origin {
            ip: pool_ip(rng, pool),
            country: pool.country,
            region: pool.region,
            user_agent: ATTACKER_UA,
        })
    };
    let probe = origin(rng);
    let burst_ips: Vec<Arc<Origin>> = (0..rng.random_range(12..=20))
        .map(|_| origin(rng))
        .collect();
    let n_probe = rng.random_range(3..=5);
    let probe_span = (window * 12 / 100).min(3 * MIN);
    let burst_from = r.start_ms + window * 3 / 10;
    let n_burst = rng.random_range(300..=600);
    let key = r.key;
    let draft = |origin: Arc<Origin>, prompt: u32, completion: u32| Draft {
        key,
        model: &EXPENSIVE_MODEL,
        user: None,
        ip: 0,
        origin: Some(origin),
        prompt_tokens: prompt,
        completion_tokens: completion,
        stream: false,
        mode: Mode::NoClientRetry,
    };
    let probes = uniform_times(rng, n_probe, r.start_ms, r.start_ms + probe_span);
    r.onset_ms = probes.iter().copied().min().unwrap_or(r.start_ms);
    for t in probes {
        let (p, c) = (rng.random_range(8..=60), rng.random_range(1..=30));
        r.schedule.push((t, draft(probe.clone(), p, c)));
    }
    for t in uniform_times(rng, n_burst, burst_from, r.end_ms - 1_000) {
        let o = burst_ips[rng.random_range(0..burst_ips.len())].clone();
        let row = trace.rows[rng.random_range(0..trace.rows.len())];
        let p = (row.prompt_tokens * 2).min(100_000);
        r.schedule
            .push((t, draft(o, p, rng.random_range(800..=4_000))));
    }
    r.note = format!(
        "probe then burst: {n_probe} probe requests on {} (a model family {} never used) from {} \
         ({}, {} AS{}) with user agent {ATTACKER_UA}, no user, while the key's home is {}; from \
         {} a burst of {n_burst} long requests from {} addresses of that network",
        EXPENSIVE_MODEL.name,
        k.id,
        probe.ip,
        pool.country,
        pool.org,
        pool.asn,
        k.country,
        format_ms(burst_from),
        burst_ips.len()
    );
}

fn scanning(r: &mut Resolved, rng: &mut ChaCha8Rng) {
    let pool = &HOSTING_POOLS[rng.random_range(0..HOSTING_POOLS.len())];
    let origin = Arc::new(Origin {
        ip: pool_ip(rng, pool),
        country: pool.country,
        region: pool.region,
        user_agent: SCANNER_UA,
    });
    let n_keys = rng.random_range(40..=60);
    let mut tries: Vec<Arc<str>> = Vec::new();
    for _ in 0..n_keys {
        // What the gateway logs for a key it cannot resolve: a fingerprint of the presented
        // secret, in the shape of Tripline's own (`fp_` + 24 hex digits).
        let id: Arc<str> =
            format!("fp_{:016x}{:08x}", rng.random::<u64>(), rng.random::<u32>()).into();
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        tries.extend(std::iter::repeat_n(id, n));
    }
    // Fisher-Yates, so that a key's second try does not follow its first.
    for i in (1..tries.len()).rev() {
        let j = rng.random_range(0..=i);
        tries.swap(i, j);
    }
    let times = uniform_times(rng, tries.len(), r.start_ms, r.end_ms);
    r.onset_ms = times.iter().copied().min().unwrap_or(r.start_ms);
    for (t, id) in times.into_iter().zip(&tries) {
        let draft = Draft {
            key: 0,
            model: &MODELS[0],
            user: None,
            ip: 0,
            origin: Some(origin.clone()),
            prompt_tokens: 0,
            completion_tokens: 0,
            stream: false,
            mode: Mode::UnknownKey(id.clone()),
        };
        r.schedule.push((t, draft));
    }
    r.truth_key = origin.ip.clone();
    r.note = format!(
        "{n_keys} non-existent keys (api_key_id fp_...) tried {} times from {} ({}, {} AS{}) with \
         user agent {SCANNER_UA}, every one answered 401",
        tries.len(),
        origin.ip,
        pool.country,
        pool.org,
        pool.asn
    );
}

fn travel(r: &mut Resolved, k: &KeyProfile, trace: &Trace, rng: &mut ChaCha8Rng) {
    let far: Vec<_> = others(k.country, false)
        .into_iter()
        .filter(|(_, d)| *d > FAR_KM)
        .collect();
    let (far, km) = far[rng.random_range(0..far.len())];
    let origins: Vec<Arc<Origin>> = (0..2)
        .map(|_| {
            Arc::new(Origin {
                ip: any_ip(rng, far),
                country: far.code,
                region: far.regions[0].0,
                user_agent: k.user_agent,
            })
        })
        .collect();
    let mut segment = 0;
    let mut seg_start = r.start_ms;
    while seg_start < r.end_ms {
        let abroad = segment % 2 == 1;
        let n = rng.random_range(3..=6);
        let to = (seg_start + 60_000).min(r.end_ms);
        let times = uniform_times(rng, n, seg_start, to);
        if abroad && segment == 1 {
            r.onset_ms = times.iter().copied().min().unwrap_or(seg_start);
        }
        for t in times {
            let origin = abroad.then(|| origins[rng.random_range(0..origins.len())].clone());
            r.schedule
                .push((t, own_draft(r.key, k, trace, rng, origin)));
        }
        segment += 1;
        seg_start += TRAVEL_SEGMENT_MS;
    }
    r.note = format!(
        "{} (home {}) is used from {} ({km:.0} km away, from {} and {}) every other 2.5 minutes, \
         alternating with home: an implied speed far above 1,000 km/h",
        k.id, k.country, far.code, origins[0].ip, origins[1].ip
    );
}

fn slow_move(r: &mut Resolved, k: &KeyProfile, trace: &Trace, rng: &mut ChaCha8Rng, window: i64) {
    let after = (30 * MIN).min(window / 4);
    let planned_gap = window - after;
    let hours = |ms: i64| ms as f64 / 3_600_000.0;
    let candidates = others(k.country, true);
    // The farthest country reachable at an airliner's pace in the planned silence; if none is,
    // the nearest, with the silence stretched to what it takes.
    let reachable = candidates
        .iter()
        .filter(|(_, d)| d / hours(planned_gap) <= SLOW_MOVE_MAX_KMH)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let (dest, km, gap) = match reachable {
        Some(&(c, d)) => (c, d, planned_gap),
        None => {
            let &(c, d) = candidates
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("the catalog has more than one country");
            let needed = (d / SLOW_MOVE_MAX_KMH * 60.0).ceil() as i64 * MIN;
            (c, d, needed)
        }
    };
    let moved_at = r.start_ms + gap;
    r.end_ms = moved_at + after;
    let origins: Vec<Arc<Origin>> = k
        .ips
        .iter()
        .map(|_| {
            Arc::new(Origin {
                ip: isp_ip(rng, dest),
                country: dest.code,
                region: dest.regions[0].0,
                user_agent: k.user_agent,
            })
        })
        .collect();
    let home = own_draft(r.key, k, trace, rng, None);
    let abroad = own_draft(r.key, k, trace, rng, Some(origins[0].clone()));
    r.schedule = vec![(r.start_ms, home), (moved_at, abroad)];
    r.relocation = Some(Relocation {
        silent_from_ms: r.start_ms,
        moved_at_ms: moved_at,
        origins,
    });
    let stretched = if gap != planned_gap {
        format!(
            " (silence stretched from the planned {:.1} h so that the nearest country is reachable)",
            hours(planned_gap)
        )
    } else {
        String::new()
    };
    r.note = format!(
        "{} last used from {} at {}, silent {:.1} h{stretched}, then used from {} ({km:.0} km: \
         {:.0} km/h < 1,000) with the same user agent and models from ISP addresses; must not \
         alert",
        k.id,
        k.country,
        format_ms(r.start_ms),
        hours(gap),
        dest.code,
        km / hours(gap)
    );
}
