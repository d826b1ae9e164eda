//! How a sustained run becomes an alert: which evidence alarms for each measure (spend,
//! requests against the key's usual or its reference, price per token, tokens), the figures the
//! candidate carries, and the summary a person reads.

use serde_json::json;
use tripline_core::models::sustained::{Cusum, Judged, SustainedConfig};

use super::*;

/// How much evidence a level alarm has: the full alarm of [`Cusum::alarm`], or half of it,
/// which pages only when the key's own yesterday confirms it (see [`crate::routine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strength {
    Full,
    Half,
}

/// A level alarm on the key's spend, else on its billable requests (once its daily rhythm is
/// known, [`COUNT_AFTER_MINUTES`]), at `strength`. A half one is marked
/// `confirm = yesterday`: it stands only if the key is clearly `min_ratio` times as busy as at
/// this time yesterday ([`crate::routine::judge`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn level_candidate(
    row: &KeyMinute,
    state: &KeyState,
    evidence: &Evidence,
    params: &SpendParams,
    config: &SustainedConfig,
    impact_usd: f64,
    (how, rhythm, by): (u8, f64, Judged),
    strength: Strength,
) -> Option<Candidate> {
    let least = match strength {
        Strength::Full => config.threshold,
        Strength::Half => config.threshold / 2.0,
    };
    if evidence.spend.sum < least && evidence.count.sum < least {
        return None;
    }
    let alarms = |run: &Cusum, impact: f64| match strength {
        Strength::Full => run.alarm(config, MINUTES_PER_DAY, impact, by),
        Strength::Half => run.half_alarm(config, MINUTES_PER_DAY, impact, by),
    };
    let mut candidate = if alarms(&evidence.spend, impact_usd) {
        spend_candidate(row, &evidence.spend, impact_usd, config, by)
    } else {
        let per_request = (state.spend.model.windows() >= COUNT_AFTER_MINUTES
            && evidence.count.sum >= least)
            .then(|| {
                state
                    .sustained
                    .usual_cost_per_request(&state.spend.model, params, how, rhythm)
            })
            .flatten()
            .filter(|&usd| alarms(&evidence.count, impact_usd / usd))?;
        count_candidate(row, &evidence.count, per_request, impact_usd, config, by)
    };
    if strength == Strength::Half {
        candidate.facts.insert("confirm".into(), json!("yesterday"));
    }
    Some(candidate)
}

/// A rise of billable requests against the key's reference ([`Evidence::ramp`]), with the full
/// evidence at `min_ratio` whatever its length, once the key's daily rhythm is known. Marked
/// `confirm = yesterday`: it pages only if the key is also at least [`RAMP_CONFIRM_RATIO`]
/// times as busy as at this time yesterday (fact `confirm_ratio`), beyond the rise of everyone's
/// traffic since then ([`crate::routine`]).
pub(super) fn ramp_candidate(
    row: &KeyMinute,
    state: &KeyState,
    evidence: &Evidence,
    params: &SpendParams,
    config: &SustainedConfig,
    impact_usd: f64,
    (how, rhythm, by): (u8, f64, Judged),
) -> Option<Candidate> {
    if state.spend.model.windows() < COUNT_AFTER_MINUTES || evidence.ramp.sum < config.threshold {
        return None;
    }
    let per_request =
        state
            .sustained
            .usual_cost_per_request(&state.spend.model, params, how, rhythm)?;
    if !evidence
        .ramp
        .steady_alarm(config, MINUTES_PER_DAY, impact_usd / per_request, by)
    {
        return None;
    }
    let mut c = count_candidate(row, &evidence.ramp, per_request, impact_usd, config, by);
    c.summary
        .push_str(" (its usual as of half an hour to an hour ago)");
    c.facts.insert("confirm".into(), json!("yesterday"));
    c.facts.insert("baseline".into(), json!("reference"));
    c.facts
        .insert("confirm_ratio".into(), json!(RAMP_CONFIRM_RATIO));
    Some(c)
}

/// A sustained spend alert on `row`'s key from `start_s`: `observed` against `usual` dollars a
/// minute, `ratio` times the usual, worth `extra_per_day` if it went on. Critical from 100
/// times the impact floor. The caller writes the summary.
pub(super) fn sustained_candidate(
    row: &KeyMinute,
    start_s: u32,
    (observed, usual, ratio): (f64, f64, f64),
    extra_per_day: f64,
    impact_usd: f64,
    rule: &str,
    minutes: u32,
) -> Candidate {
    let mut c = Candidate::new(
        Detector::SpendSpike,
        &[("api_key_id", &row.api_key_id), ("project", &row.project)],
        start_s,
        row.minute + MINUTE,
    );
    c.severity = if extra_per_day >= 100.0 * impact_usd {
        Severity::Critical
    } else {
        Severity::Warning
    };
    (c.observed, c.expected) = (observed, usual);
    c.upper = usual + impact_usd / MINUTES_PER_DAY;
    c.score = (1.0 - 1.0 / ratio).clamp(0.0, 1.0);
    c.facts.insert("rule".into(), json!(rule));
    c.facts.insert("minutes".into(), json!(minutes));
    c.facts
        .insert("extra_usd_per_day".into(), json!(extra_per_day));
    c.facts.insert("requests".into(), json!(row.requests));
    c
}

pub(super) fn spend_candidate(
    row: &KeyMinute,
    run: &Cusum,
    impact_usd: f64,
    config: &SustainedConfig,
    by: Judged,
) -> Candidate {
    let minutes = run.windows.max(1);
    let start = row.minute.saturating_sub((minutes - 1) * MINUTE);
    let level = run.reported(config, by);
    let extra_per_day = (level.observed - level.expected) * MINUTES_PER_DAY;
    let mut c = sustained_candidate(
        row,
        start,
        (level.observed, level.expected, level.ratio),
        extra_per_day,
        impact_usd,
        "sustained",
        minutes,
    );
    c.summary = format!(
        "key {} has spent ${:.4} a minute {}, {} its usual ${:.4}: +${extra_per_day:.0} a day if \
         it goes on",
        row.api_key_id,
        level.observed,
        lasting(run, config, by),
        times(level.ratio),
        level.expected,
    );
    c
}

/// "for 12 min", or "lately, rising for 45 min" for a run judged by where it stands now.
pub(super) fn lasting(run: &Cusum, config: &SustainedConfig, by: Judged) -> String {
    let minutes = run.windows.max(1);
    if run.judged_recently(config, by) {
        format!("lately, rising for {minutes} min")
    } else {
        format!("for {minutes} min")
    }
}

/// A key sending more billable requests than usual, priced at `per_request`, its usual cost of
/// one.
pub(super) fn count_candidate(
    row: &KeyMinute,
    run: &Cusum,
    per_request: f64,
    impact_usd: f64,
    config: &SustainedConfig,
    by: Judged,
) -> Candidate {
    let minutes = run.windows.max(1);
    let start = row.minute.saturating_sub((minutes - 1) * MINUTE);
    let Level {
        observed,
        expected,
        ratio,
    } = run.reported(config, by);
    let extra_per_day = (observed - expected) * per_request * MINUTES_PER_DAY;
    let figures = (observed * per_request, expected * per_request, ratio);
    let mut c = sustained_candidate(
        row,
        start,
        figures,
        extra_per_day,
        impact_usd,
        "sustained_requests",
        minutes,
    );
    c.facts
        .insert("requests_per_minute".into(), json!(observed));
    c.summary = format!(
        "key {} has sent {observed:.1} requests a minute {}, {} its usual {expected:.1}: \
         +${extra_per_day:.0} a day if it goes on, at its usual ${per_request:.4} a request",
        row.api_key_id,
        lasting(run, config, by),
        times(ratio)
    );
    c
}

/// A key paying a raised price per token over its recent active minutes, whatever its request
/// rate: judged as spend, at its usual spend of `usual_per_minute`.
pub(super) fn price_candidate(
    row: &KeyMinute,
    run: &Cusum,
    usual_per_minute: f64,
    impact: f64,
) -> Candidate {
    let minutes = run.windows.max(1);
    let ratio = run.trimmed().ratio();
    let extra_per_day = (ratio - 1.0) * usual_per_minute * MINUTES_PER_DAY;
    let figures = (usual_per_minute * ratio, usual_per_minute, ratio);
    let mut c = sustained_candidate(
        row,
        row.minute,
        figures,
        extra_per_day,
        impact,
        "sustained_price",
        minutes,
    );
    c.summary = format!(
        "key {} has paid {} its usual price per token in its last {minutes} active minutes: \
         +${extra_per_day:.0} a day at its usual ${usual_per_minute:.4} a minute",
        row.api_key_id,
        times(ratio)
    );
    c
}

/// Says in the alert that the key's price per token jumped, and to what: "now 90 % o1, 50x
/// the price per token of its usual deepseek-chat". `mix`: the key's usage rows this cycle.
pub(super) fn describe_price_jump(
    c: &mut Candidate,
    ratio: f64,
    mix: &[&Usage],
    from_s: u32,
    usual_model: Option<&str>,
) {
    let mut by_model: Vec<(&str, u64)> = Vec::new();
    for u in mix.iter().filter(|u| u.minute >= from_s) {
        match by_model.iter_mut().find(|(m, _)| *m == u.model) {
            Some(entry) => entry.1 += u.requests,
            None => by_model.push((&u.model, u.requests)),
        }
    }
    let total: u64 = by_model.iter().map(|(_, n)| n).sum();
    let top = by_model
        .iter()
        .max_by_key(|(_, n)| *n)
        .filter(|_| total > 0);
    let now = top.map(|(model, n)| (model, 100.0 * *n as f64 / total as f64));
    let usual = usual_model.filter(|u| now.is_none_or(|(model, _)| model != u));
    let clause = match (now, usual) {
        (Some((model, share)), Some(usual)) => format!(
            "now {share:.0} % {model}, {ratio:.0}x the price per token of its usual {usual}"
        ),
        (Some((model, share)), None) => {
            format!("now {share:.0} % {model}, {ratio:.0}x its usual price per token")
        }
        (None, _) => format!("{ratio:.0}x its usual price per token"),
    };
    c.summary = format!("{}; {clause}", c.summary);
    c.facts.insert("price_per_token_ratio".into(), json!(ratio));
    if let Some((model, share)) = now {
        c.facts.insert("model_now".into(), json!(model));
        c.facts
            .insert("model_now_share".into(), json!(share / 100.0));
    }
    if let Some(usual) = usual {
        c.facts.insert("usual_model".into(), json!(usual));
    }
}

pub(super) fn tokens_candidate(
    row: &KeyMinute,
    run: &Cusum,
    config: &SustainedConfig,
    by: Judged,
) -> Candidate {
    let minutes = run.windows.max(1);
    let start = row.minute.saturating_sub((minutes - 1) * MINUTE);
    let mut c = Candidate::new(
        Detector::SpendSpike,
        &[
            ("api_key_id", &row.api_key_id),
            ("project", &row.project),
            ("measure", "tokens"),
        ],
        start,
        row.minute + MINUTE,
    );
    let Level {
        observed,
        expected,
        ratio,
    } = run.reported(config, by);
    (c.observed, c.expected, c.upper) = (observed, expected, expected * 2.0);
    c.score = (1.0 - 1.0 / ratio).clamp(0.0, 1.0);
    c.summary = format!(
        "key {} has used {observed:.0} tokens a minute {}, {} its usual {expected:.0}",
        row.api_key_id,
        lasting(run, config, by),
        times(ratio)
    );
    c.facts.insert("rule".into(), json!("sustained"));
    c.facts.insert("minutes".into(), json!(minutes));
    c
}

/// "52x", or "far above" when nothing was expected.
pub(super) fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.1}x")
    } else {
        "far above".into()
    }
}
