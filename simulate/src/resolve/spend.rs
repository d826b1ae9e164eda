//! Drawn spend incidents: each spike, ramp or price shift draws its multiple (or its pricier
//! model) from a wide range on its key, and moves to a bigger key until its extra spend would
//! matter ([`IMPACT_MARGIN`] times the default impact floor); then its requests and its note.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tripline_core::config::SpendSpikeConfig;

use super::{Resolved, MIN};
use crate::catalog::{Model, MODELS};
use crate::incidents::{IncidentKind, IncidentPlan};
use crate::inject::{Context, Mode, RateSpec, Shape};
use crate::keys::KeyProfile;
use crate::traces::Trace;
use crate::traffic::prices;

/// A drawn spend incident's extra spend, if it went on for a day, is at least this many times
/// the default impact floor (`SpendSpikeConfig::impact_usd_per_day`).
pub(crate) const IMPACT_MARGIN: f64 = 2.0;
/// Draws on one key before a drawn spend incident moves to a bigger one.
const SPEND_REDRAWS: usize = 8;
/// Log-uniform ranges: the spikes' and the ramp's (final) multiples of the key's requests, and
/// the price shift's ratio of price per token.
pub(crate) const SMALL_MULTIPLE: (f64, f64) = (2.0, 8.0);
pub(crate) const LARGE_MULTIPLE: (f64, f64) = (8.0, 50.0);
pub(crate) const RAMP_MULTIPLE: (f64, f64) = (2.0, 10.0);
pub(crate) const PRICE_RATIO: (f64, f64) = (5.0, 200.0);
/// What a drawn spend incident was drawn with (see [`crate::IncidentKind`]).
#[derive(Debug, Clone)]
pub(crate) struct SpendDraw {
    /// The key it runs on, and the one the plan named (they differ when no draw on the
    /// latter mattered).
    pub key: usize,
    pub planned_key: usize,
    /// The key's own requests and USD a minute at the window's middle, before the incident.
    pub base_req_per_min: f64,
    pub base_usd_per_min: f64,
    /// The spikes' multiple of the key's requests, the ramp's final one, or the price shift's
    /// ratio of price per token (the model's over the key's usual mix).
    pub multiple: f64,
    /// The price shift's model, and the ratio drawn before the nearest model was taken.
    pub model: Option<&'static Model>,
    pub drawn_ratio: f64,
    /// Extra USD a minute at full height, and a day if that went on.
    pub extra_usd_per_min: f64,
    pub extra_usd_per_day: f64,
    /// Whether it reached [`IMPACT_MARGIN`] times the impact floor (only not when no free key
    /// could).
    pub matters: bool,
}

/// The smallest extra USD a day a drawn spend incident must add.
pub(crate) fn impact_needed_usd_per_day() -> f64 {
    IMPACT_MARGIN * SpendSpikeConfig::default().impact_usd_per_day
}

/// Draws plan `n`'s figures on its key, up to [`SPEND_REDRAWS`] times, until the extra spend
/// matters; failing that, on the next bigger key (by share) free at its time (as the layout
/// sees it: no other incident within 10 minutes), and so on. When even the biggest free key
/// cannot, the last draw on it stands (`matters` false, said in the note).
pub(crate) fn choose_spend(
    plans: &[IncidentPlan],
    n: usize,
    rng: &mut ChaCha8Rng,
    cx: &Context<'_>,
) -> SpendDraw {
    let plan = &plans[n];
    let (from, to) = plan.hold_ms();
    let free = |k: usize| {
        plans.iter().enumerate().all(|(m, p)| {
            if m == n || !p.kind.targets_key() || p.key != k {
                return true;
            }
            let (a, b) = p.hold_ms();
            to <= a || b <= from
        })
    };
    let share = |k: usize| cx.keys[k].share;
    let mut bigger: Vec<usize> = (0..cx.keys.len())
        .filter(|&k| share(k) > share(plan.key) && free(k))
        .collect();
    bigger.sort_by(|a, b| share(*a).total_cmp(&share(*b)).then(b.cmp(a)));
    let mid = cx.start_ms + plan.offset_ms + plan.duration_ms / 2;
    let needed = impact_needed_usd_per_day();
    let mut last = None;
    for key in std::iter::once(plan.key).chain(bigger) {
        for _ in 0..SPEND_REDRAWS {
            let d = draw_spend(plan.kind, key, plan.key, mid, rng, cx);
            if d.extra_usd_per_day >= needed {
                return d;
            }
            last = Some(d);
        }
    }
    last.expect("at least one draw")
}

/// One draw of a spend incident's figures on `key`.
fn draw_spend(
    kind: IncidentKind,
    key: usize,
    planned_key: usize,
    mid_ms: i64,
    rng: &mut ChaCha8Rng,
    cx: &Context<'_>,
) -> SpendDraw {
    let k = &cx.keys[key];
    let base_req = (cx.per_min)(key, mid_ms);
    let usd_req = usd_per_request(k, cx.trace, 1.0, 1.0);
    let base_usd = base_req * usd_req;
    let log_uniform =
        |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| rng.random_range(lo.ln()..=hi.ln()).exp();
    let (multiple, model, drawn_ratio) = match kind {
        IncidentKind::SpendSpikeSmall => (log_uniform(rng, SMALL_MULTIPLE), None, 0.0),
        IncidentKind::SpendSpikeLarge => (log_uniform(rng, LARGE_MULTIPLE), None, 0.0),
        IncidentKind::SpendRamp => (log_uniform(rng, RAMP_MULTIPLE), None, 0.0),
        _ => {
            let drawn = log_uniform(rng, PRICE_RATIO);
            let (model, ratio) = nearest_pricier(k, cx.trace, drawn);
            (ratio, Some(model), drawn)
        }
    };
    let extra_usd_per_min = (multiple - 1.0) * base_usd;
    let extra_usd_per_day = extra_usd_per_min * 1_440.0;
    SpendDraw {
        key,
        planned_key,
        base_req_per_min: base_req,
        base_usd_per_min: base_usd,
        multiple,
        model,
        drawn_ratio,
        extra_usd_per_min,
        extra_usd_per_day,
        matters: extra_usd_per_day >= impact_needed_usd_per_day(),
    }
}

/// The catalog's model whose price per token at the key's token mix, over the key's usual
/// mix's, is nearest (in log) to `ratio` among those in [`PRICE_RATIO`]; the priciest when
/// none is 5x pricier. With that ratio.
fn nearest_pricier(k: &KeyProfile, trace: &Trace, ratio: f64) -> (&'static Model, f64) {
    let usual = usd_per_request(k, trace, 1.0, 1.0);
    let ratios: Vec<(&'static Model, f64)> = MODELS
        .iter()
        .map(|m| (m, usd_per_request_on(m, trace) / usual))
        .collect();
    let in_range = ratios
        .iter()
        .filter(|(_, r)| (PRICE_RATIO.0..=PRICE_RATIO.1).contains(r))
        .min_by(|a, b| {
            (a.1 / ratio)
                .ln()
                .abs()
                .total_cmp(&(b.1 / ratio).ln().abs())
        });
    let priciest = ratios.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    *in_range.or(priciest).expect("the catalog has models")
}

/// A drawn spend incident: extra requests of the key's own kind (spikes, ramp) or its own
/// requests on a pricier model (price shift), and the note with the figures.
pub(super) fn drawn_spend(r: &mut Resolved, plan: &IncidentPlan, k: &KeyProfile, d: &SpendDraw) {
    use IncidentKind::*;
    let id = &k.id;
    let minutes = plan.duration_ms / MIN;
    let (base_req, base_usd, m) = (d.base_req_per_min, d.base_usd_per_min, d.multiple);
    let (extra_min, extra_day) = (d.extra_usd_per_min, d.extra_usd_per_day);
    let floor = SpendSpikeConfig::default().impact_usd_per_day;
    let usual = format!("usually ${base_usd:.4}/min ({base_req:.2} requests/min)");
    let impact = format!(
        "+${extra_min:.4}/min, ${extra_day:.2}/day if it went on (the default impact floor is \
         ${floor:.0}/day)"
    );
    if plan.kind != SpendPriceShift {
        r.rate = Some(RateSpec {
            extra_multiple: m - 1.0,
            floor_per_ms: 0.0,
            shape: if plan.kind == SpendRamp {
                Shape::Ramp
            } else {
                Shape::Flat
            },
            prompt_scale: 1.0,
            completion_scale: 1.0,
            stream: None,
            model: None,
            mode: Mode::NoClientRetry,
            stop_ms: r.end_ms,
        });
    }
    let mut note = match plan.kind {
        SpendSpikeSmall | SpendSpikeLarge => format!(
            "size {}: {id} ({usual}) sends {m:.1}x its requests, its own models and tokens, for \
             {minutes} min: {impact}",
            if plan.kind == SpendSpikeSmall {
                "small"
            } else {
                "large"
            }
        ),
        SpendRamp => {
            // Nothing extra at the start: it counts from the key at 2x.
            let at = (plan.duration_ms as f64 / (m - 1.0)) as i64;
            r.onset_ms = r.start_ms + at.min(plan.duration_ms - MIN).max(0);
            format!(
                "slow ramp: {id}'s extra requests (its own models and tokens; {usual}) grow \
                 linearly over {minutes} min from none to {:.1}x its own ({m:.1}x in all), at the \
                 end {impact}; onset at 2x, after {:.1} min",
                m - 1.0,
                (r.onset_ms - r.start_ms) as f64 / MIN as f64
            )
        }
        _ => {
            let model = d.model.expect("a price shift has its model");
            r.shift = Some(model);
            let main = &MODELS[k.models[0]];
            let others = match k.models.len() {
                1 => String::new(),
                n => format!(" (mix of {n} models)"),
            };
            let capped = if (PRICE_RATIO.0..=PRICE_RATIO.1).contains(&m) {
                String::new()
            } else {
                format!(
                    " (the catalog's priciest for this key; {:.0}x was drawn)",
                    d.drawn_ratio
                )
            };
            format!(
                "price shift: for {minutes} min all of {id}'s own requests move to {}/{}, {m:.1}x \
                 the price per token of its usual {}{others}{capped}, at the same request rate \
                 and tokens ({usual}): {impact}",
                model.provider, model.name, main.name
            )
        }
    };
    if d.key != d.planned_key {
        note.push_str(&format!(
            "; drawn on key-{:04} first, where no draw mattered, so on the next bigger key free",
            d.planned_key
        ));
    }
    if !d.matters {
        note.push_str("; below twice the impact floor: no free key could reach it");
    }
    r.note = note;
}

/// Expected USD of one request on `model` with the trace's mean tokens.
fn usd_per_request_on(model: &Model, trace: &Trace) -> f64 {
    prices()
        .lookup(model.provider, model.name)
        .map_or(0.0, |p| {
            p.input * trace.mean_prompt_tokens + p.output * trace.mean_completion_tokens
        })
}

/// Expected USD of one request of the key's model mix with the trace's mean tokens scaled.
pub(super) fn usd_per_request(
    k: &KeyProfile,
    trace: &Trace,
    prompt_scale: f64,
    completion_scale: f64,
) -> f64 {
    const SPLIT: [f64; 4] = [0.6, 0.25, 0.1, 0.05];
    let weights = &SPLIT[..k.models.len().min(SPLIT.len())];
    let total: f64 = weights.iter().sum();
    let usd = |m: &Model| {
        prices().lookup(m.provider, m.name).map_or(0.0, |p| {
            p.input * trace.mean_prompt_tokens * prompt_scale
                + p.output * trace.mean_completion_tokens * completion_scale
        })
    };
    let mix: f64 = weights
        .iter()
        .zip(&k.models)
        .map(|(w, &m)| w * usd(&MODELS[m]))
        .sum();
    // Never zero: the rate floors divide by it.
    (mix / total).max(1e-6)
}
