//! spend_spike on sustained evidence: a key whose spend (or tokens) stays well above its own
//! baseline for a few minutes, sized to the key and to what it would cost if it went on
//! (`tripline_core::models::sustained`). It finds what the per-minute rule's dollar floor
//! cannot: x3 on a key that spends half a cent a minute, a key moved to a model a hundred times
//! pricier. It alerts under the same labels as the per-minute rule: one alert per key.
//!
//! A key is judged against its usual *and* against how busy everyone else is ([`Crowd`]): when
//! the whole gateway runs at x2 (a daily peak, a burst of the traffic's own rhythm), a key at
//! x2 is doing what everyone does. Measured on the simulator's real-trace traffic (BENCHMARKS.md,
//! "Sustained spend"), this is what separates a key's own rise from the crowd's bursts.

use tripline_core::models::ewma::Ewma;
use tripline_core::models::seasonal::Seasonal;
use tripline_core::models::sustained::{
    floored_sigma, Cusum, Dispersion, Judged, Level, SustainedConfig,
};

use super::*;

const MINUTES_PER_DAY: f64 = 1440.0;
/// A price per token this many times the key's usual is a move to pricier models, worth
/// naming in the alert and, sustained, worth an alert of its own: a key's ordinary mix moves it
/// by far less.
const PRICE_JUMP: f64 = 3.0;
/// The least spread assumed of a key's log price per token from minute to minute: a key on one
/// model still varies with its share of (pricier) output tokens, and at this floor a full
/// step of evidence needs about a x3 price.
const MIN_LOG_PRICE_SIGMA: f64 = 0.35;
/// A price run needs this many times `sustained.threshold` (see [`Evidence::price_alarm`]).
const PRICE_EVIDENCE: f64 = 2.0;
/// Priced active minutes before a key's usual price per token is trusted.
const PRICE_WARMUP: u64 = 40;
/// Minutes of a key's history (idle ones included) before its request count may alarm: most
/// of a day, so that its daily rhythm is known (its requests' hour-of-day factors, [`rhythm`]).
/// Before that, a key's morning and a runaway job look alike, and the count, sharper than
/// spend, would page on mornings.
const COUNT_AFTER_MINUTES: u64 = 20 * 60;
/// How many times its busiest ten minutes around this time yesterday a key must send for a
/// rise certain against its [`Reference`] to page, times how much busier everyone else is than
/// then. Less than `min_ratio`: that rise is already `min_ratio` times what the key sent half
/// an hour to an hour before, and yesterday's level is a maximum over six blocks, above the
/// hour's mean by the key's own burstiness. A key's day rising into its busy hours stays at
/// about 1x of it (0.14-0.89x at the daily peaks of DEV seeds 2 and 3, BENCHMARKS.md
/// "Session 14").
const RAMP_CONFIRM_RATIO: f64 = 1.5;
/// A key's [`Reference`] closes a mark of the requests it sent every this many minutes of its
/// history, and judges against the older of its last two marks: half an hour to an hour old.
const REFERENCE_WINDOWS: u64 = 30;

/// `config` for a key's count of requests: one minute may add evidence up to
/// `threshold / 2 + slack` (4.5 by default, two minutes at it reach the threshold), where
/// dollars and tokens keep `max_step` (four minutes). `max_step` is there because one long
/// request on a quiet key is a z of 30 in dollars or tokens; a count has no such request, and
/// its spread is already widened by the key's own burstiness ([`Dispersion`]). At four
/// minutes, a key sending x43 its requests for three minutes was never told (DEV seed 8).
/// The same for its count against its [`Reference`] ([`Evidence::ramp_step`]).
fn counted(config: &SustainedConfig) -> SustainedConfig {
    SustainedConfig {
        max_step: config.max_step.max(config.threshold / 2.0 + config.slack),
        ..*config
    }
}

/// A key's evidence: spend per minute (idle minutes count as zero) and tokens per active
/// minute, each with how bursty the key has been ([`Dispersion`]); the price per token of its
/// active minutes; and its usual requests per minute (what it adds to the [`Crowd`]).
///
/// The price is judged per active minute, not per minute of the clock: a key that calls once
/// every ten minutes and moves to a model fifty times pricier shows it in every call it makes,
/// while its spend per minute is mostly zeros that hide it. Its scale is the key's own spread
/// of log price per token (a mix of models varies more than one model does).
///
/// Tokens are judged on their own only in minutes the price table put no dollar figure on
/// (self-hosted or unknown models): where it could, the spend evidence says the same thing in
/// the user's terms, and one alert per key is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    spend: Cusum,
    tokens: Cusum,
    spend_dispersion: Dispersion,
    tokens_dispersion: Dispersion,
    /// Billable requests per minute (idle minutes count), deseasonalised by the key's
    /// [`rhythm`], learnt at a tenth of the weight while a rise of them is at the alarm.
    requests: Ewma,
    /// Evidence of more billable requests a minute than usual. A rate incident (a runaway job,
    /// a loop, a stolen key) multiplies requests of the key's usual size; a count is judged
    /// against a Poisson spread at least, so a small key's x3 is certain within minutes even
    /// when the cost of its single requests varies tenfold and hides it in its spend.
    count: Cusum,
    count_dispersion: Dispersion,
    /// Log dollars per token of its priced minutes (those of a price run at a tenth of the
    /// weight): a jump says the key moved to a pricier model, not merely sent more.
    log_price: Ewma,
    /// Evidence of a raised price per token, over active priced minutes (dollars paid against
    /// the tokens at the usual price).
    price: Cusum,
    /// The price run's latest ratio before its latest window (the active priced minute before
    /// it): a price alarm needs both at the ratio (see [`Evidence::price_alarm`]).
    price_before: f64,
    /// The spend expectation and sigma as of the key's last active minute (fading as it is
    /// active): the floor of what it is judged against when it wakes up.
    awake: (f64, f64),
    /// The usual requests a minute as of the key's last active minute, fading likewise.
    awake_requests: f64,
    /// Evidence of more billable requests a minute than the key's [`Reference`]: what it
    /// actually sent half an hour to an hour ago, scaled by how much busier everyone else is
    /// since. A ramp is learnt into the key's usual, its hour's factor and its burstiness as it
    /// climbs (a x2.8 ramp stood at x1.5 against them, BENCHMARKS.md); against the reference it
    /// stands at its full height. It pages only where the key's yesterday confirms it, as a
    /// half alarm does: a key's own day rising into its busy hours is a rise against the
    /// reference too.
    ramp: Cusum,
    reference: Reference,
}

/// What a key actually sent half an hour to an hour ago: the baseline of [`Evidence::ramp`].
/// No minute of a rise younger than half an hour is in it, and no model: neither the key's
/// usual nor its hour's factor, which a ramp teaches as it climbs, and which carry a key's
/// day badly across an hour's boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reference {
    /// The key's last two closed half hours, the older first.
    marks: [Mark; 2],
    /// The half hour being summed: billable requests, their squares, and closed minutes.
    sum: f64,
    sum_sq: f64,
    minutes: u32,
    /// The model's windows when that half hour began.
    at: u64,
}

/// A key's billable requests a minute over a half hour (idle minutes count): their mean and
/// variance, and the widening for its burstiness then.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Mark {
    mean: f64,
    var: f64,
    widening: f64,
}

impl Reference {
    /// Adds a minute's `requests` (a closed minute's only), closing the half hour's mark every
    /// [`REFERENCE_WINDOWS`] of the model's `windows`.
    fn advance(&mut self, windows: u64, requests: f64, elapsed: f64, widening: f64) {
        if windows / REFERENCE_WINDOWS > self.at / REFERENCE_WINDOWS {
            if self.minutes > 0 {
                let n = f64::from(self.minutes);
                let mean = self.sum / n;
                let var = (self.sum_sq / n - mean * mean).max(0.0);
                self.marks = [
                    self.marks[1],
                    Mark {
                        mean,
                        var,
                        widening,
                    },
                ];
            }
            (self.sum, self.sum_sq, self.minutes, self.at) = (0.0, 0.0, 0, windows);
        }
        if elapsed >= 1.0 {
            self.sum += requests;
            self.sum_sq += requests * requests;
            self.minutes += 1;
        }
    }

    /// What a minute is expected to hold against the older mark, and its sigma (Poisson at
    /// least, widened as the key was bursty then), scaled by `crowd` and the share of the
    /// minute `elapsed`. None until the key was active in a marked half hour.
    fn expected(&self, crowd: f64, elapsed: f64) -> Option<(f64, f64)> {
        let mark = self.marks[0];
        (mark.mean > 0.0).then(|| {
            let usual = mark.mean * crowd;
            let sigma = (mark.var.sqrt() * crowd).max(usual.sqrt());
            let expected = usual * elapsed;
            let sigma = floored_sigma(expected, sigma * elapsed.sqrt());
            (expected, sigma * mark.widening.max(1.0))
        })
    }
}

impl Evidence {
    /// The evidence after one more minute (`row`: its spend, requests and tokens, if used),
    /// judged against the baselines as they stood before it, scaled by `crowd` (how busy
    /// everyone else is, at least 1). Nothing accrues during warm-up.
    ///
    /// `rhythm`: the key's requests factor for this hour of the day ([`rhythm`]), which its
    /// usual requests (deseasonalised) are multiplied by.
    ///
    /// `elapsed`: the share of the minute that has passed (1 for a closed minute). An open
    /// minute is judged against that share of the minute's expectation, and of its variance,
    /// so that a key that has spent in 20 s what it usually spends in a minute counts as such
    /// now, not 40 s later. Only closed minutes are kept (see [`fold_key_minute`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_minute(
        self,
        model: &SpendModel,
        tokens: &Ewma,
        params: &SpendParams,
        config: &SustainedConfig,
        row: Option<(f64, u64, u64)>,
        how: u8,
        crowding: Crowding,
        elapsed: f64,
        rhythm: f64,
    ) -> Evidence {
        let crowd = crowding.usual;
        let mut next = self;
        let requests = row.map_or(0, |(_, requests, _)| requests) as f64;
        let warm = model.windows() >= u64::from(params.config.warmup_windows.max(1));
        if !warm {
            let mut young = Evidence {
                requests: self.requests,
                log_price: self.log_price,
                ..Evidence::default()
            };
            // The running mean while warming up (the spend model's level uses it longer): from
            // its first minute at the EWMA's pace, the usual stayed near that one minute for
            // hours, and the hours learnt meanwhile took their factors against it (DEV seed 2
            // started warm-up at 15:52: key-0006's 16:00 factor was 1.62 for an hour it spent
            // at about half its day's rate).
            let alpha = params.alpha();
            young
                .requests
                .update(requests, self.requests.young_alpha(alpha));
            young.learn_price(row, self.log_price.young_alpha(alpha));
            return young;
        }
        let (expected, sigma) = model.moments(params, how);
        let sigma = floored_sigma(expected, sigma);
        // Idle minutes wear the baseline down: a key that slept for hours is judged on waking
        // against what it did when it was last active, which fades only as it is active again
        // (and its baseline relearns its rate).
        if row.is_some_and(|r| r.1 > 0) {
            let fade = 1.0 - params.alpha();
            next.awake = (
                expected.max(self.awake.0 * fade),
                sigma.max(self.awake.1 * fade),
            );
            next.awake_requests = self.requests.mean.max(self.awake_requests * fade);
        }
        next.count_step(requests, rhythm * crowd, elapsed, config);
        next.reference.advance(
            model.windows(),
            requests,
            elapsed,
            self.count_dispersion.widening(),
        );
        next.ramp_step(requests, crowding.reference, elapsed, config);
        // The running mean until it weighs less than the EWMA's pace, as the spend model's
        // level does: past the warm-up a key may have few minutes behind its usual.
        next.requests.update(
            requests / rhythm,
            self.requests
                .learning_alpha(params.alpha(), next.count.learning_weight(config)),
        );
        let (expected, sigma) = (expected.max(self.awake.0), sigma.max(self.awake.1));
        let (expected, sigma) = (expected * crowd, sigma * crowd);
        let (expected, sigma) = (expected * elapsed, sigma * elapsed.sqrt());
        let cost = row.map_or(0.0, |(cost, _, _)| cost);
        next.spend = self.spend.step(
            cost,
            expected,
            sigma * self.spend_dispersion.widening(),
            config,
        );
        next.spend_dispersion.observe(cost, expected, sigma, config);
        // Tokens are judged per active minute, as their baseline is.
        if let Some((cost, _, used)) = row.filter(|r| r.1 > 0 && tokens.n >= 30) {
            let usual = tokens.mean * crowd * elapsed;
            let sigma = floored_sigma(tokens.mean, tokens.std()) * crowd * elapsed.sqrt();
            next.tokens = if cost > 0.0 {
                Cusum::default()
            } else {
                self.tokens.step(
                    used as f64,
                    usual,
                    sigma * self.tokens_dispersion.widening(),
                    config,
                )
            };
            next.tokens_dispersion
                .observe(used as f64, usual, sigma, config);
        }
        // A priced active minute: its price per token against the usual.
        if let Some((cost, _, used)) = row.filter(|r| r.0 > 0.0 && r.2 > 0) {
            if self.log_price.n >= PRICE_WARMUP {
                let usual = self.log_price.mean;
                let z = ((cost / used as f64).ln() - usual)
                    / self.log_price.std().max(MIN_LOG_PRICE_SIGMA);
                let ceiling = PRICE_EVIDENCE * config.threshold + config.max_step;
                next.price = self.price.step_scored(
                    z,
                    cost,
                    used as f64 * self.usual_price(),
                    ceiling,
                    config,
                );
                next.price_before = self.price.latest;
            }
        }
        // Every priced minute teaches the usual price, a minute of a price run at a tenth of
        // the weight: an incident's prices do not become usual within it, but a key whose mix
        // has changed for good stops looking raised in time. The running mean while that is
        // faster: a key calling once every ten minutes has three priced minutes when warm-up
        // ends, and at the EWMA's pace from there they were still 65 % of its usual price when
        // it was first judged, 40 priced minutes later.
        let weight = if next.price.sum == 0.0 { 1.0 } else { 0.1 };
        next.learn_price(row, self.log_price.learning_alpha(params.alpha(), weight));
        next
    }

    /// One minute's billable `requests` against the usual (as it stood before the minute,
    /// never below what the key did when last active), scaled by `factor` (the hour's seasonal
    /// factor times the crowd's) and the share of the minute elapsed. The spread is the
    /// learned one or the Poisson one, whichever is larger, widened by how bursty the key's
    /// counts have been.
    fn count_step(&mut self, requests: f64, factor: f64, elapsed: f64, config: &SustainedConfig) {
        let usual = self.requests.mean.max(self.awake_requests).max(0.0) * factor;
        let sigma = (self.requests.std() * factor).max(usual.sqrt());
        let (expected, sigma) = (usual * elapsed, sigma * elapsed.sqrt());
        let sigma = floored_sigma(expected, sigma);
        self.count = self.count.step(
            requests,
            expected,
            sigma * self.count_dispersion.widening(),
            &counted(config),
        );
        self.count_dispersion
            .observe(requests, expected, sigma, config);
    }

    /// One minute's billable `requests` against the key's [`Reference`], scaled by how much
    /// busier everyone else is since (`crowd`), capped as [`Evidence::count_step`]'s count is: it
    /// is a count too. At `max_step`, a key at x3.4 of what it sent an hour before for three
    /// minutes stood at 7.5 when they ended (DEV seed 4).
    fn ramp_step(&mut self, requests: f64, crowd: f64, elapsed: f64, config: &SustainedConfig) {
        self.ramp = match self.reference.expected(crowd, elapsed) {
            Some((expected, sigma)) => self.ramp.step(requests, expected, sigma, &counted(config)),
            None => Cusum::default(),
        };
    }

    /// The key's usual price per token in dollars: the mean over its mix, `exp(mean + var / 2)`
    /// of its log price. Not `exp(mean)`, the mix's geometric mean: for a key that calls a cheap
    /// model and now and then one ten times pricier, that is half of what its tokens cost on
    /// average, so its ordinary stretches of the pricier model read as a x5 jump in dollars
    /// and paged (DEV seeds 4 and 5). The evidence itself is scored on the log scale.
    fn usual_price(&self) -> f64 {
        (self.log_price.mean + self.log_price.var.max(0.0) / 2.0).exp()
    }

    fn learn_price(&mut self, row: Option<(f64, u64, u64)>, alpha: f64) {
        if let Some((cost, _, used)) = row.filter(|r| r.0 > 0.0 && r.2 > 0) {
            self.log_price.update((cost / used as f64).ln(), alpha);
        }
    }

    /// How many times its usual price per token the key paid in `row`'s minute, when that is
    /// a jump ([`PRICE_JUMP`] or more, once its usual price is known).
    fn price_jump(&self, row: &KeyMinute) -> Option<f64> {
        if self.log_price.n < PRICE_WARMUP || row.tokens == 0 || row.cost_usd <= 0.0 {
            return None;
        }
        let ratio = row.cost_usd / row.tokens as f64 / self.usual_price();
        (ratio >= PRICE_JUMP).then_some(ratio)
    }

    /// Whether the raised price per token is certain, at least [`PRICE_JUMP`] times the usual
    /// (without the run's largest minute), and worth `impact_per_day` at the key's usual spend
    /// of `usual_per_minute`: what it would pay extra a day for the same work.
    ///
    /// It takes twice the evidence a spend run does: a key whose mix calls a pricey model now
    /// and then scores each of those minutes as high as a real move to that model would, so
    /// only the length of the run tells them apart (seven pricey minutes at the defaults, at
    /// the most a minute can add).
    ///
    /// A run that took longer than `drift_windows` active minutes to become certain needs a
    /// larger jump, as a spend run does (x `sqrt(minutes / drift_windows)`): a price that
    /// creeps up over hours is a mix changing, not a move.
    ///
    /// The latest active minute and the one before it must both be at the ratio: the minute
    /// judged is often the open one, and its first request or two say little. After a leaked
    /// key's burst on a pricier model, the run's evidence and ratio stay high for a while, and
    /// one pricey request of the owner's ordinary mix at the start of a minute paged again.
    fn price_alarm(&self, config: &SustainedConfig, usual_per_minute: f64, impact: f64) -> bool {
        let ratio = self.price.trimmed().ratio();
        let needed = self.price.ratio_needed_from(PRICE_JUMP, config);
        self.price.sum >= PRICE_EVIDENCE * config.threshold
            && ratio >= needed
            && self.price.latest.min(self.price_before) >= needed
            && (ratio - 1.0) * usual_per_minute * MINUTES_PER_DAY >= impact
    }

    /// The spend evidence summed so far, of spend, requests or price per token (scaled to alarm
    /// at the same level), whichever is larger: CUSUM statistics, 0 when the key looks
    /// ordinary, alarming from `sustained.threshold` (requests only after a key's first 20
    /// hours).
    pub fn spend_evidence(&self) -> f64 {
        self.spend
            .sum
            .max(self.count.sum)
            .max(self.price.sum / PRICE_EVIDENCE)
            .max(self.ramp.sum)
    }

    /// Whether no spend evidence is building up, of spend, requests or price (the key looks
    /// ordinary).
    pub(super) fn spend_at_rest(&self) -> bool {
        self.spend.sum == 0.0 && self.count.sum == 0.0 && self.price.sum == 0.0
    }

    /// What one of the key's requests usually costs: its usual spend a minute over its usual
    /// billable requests a minute (both as of its last active minute at least). None for a key
    /// with no priced history (its tokens are judged instead).
    fn usual_cost_per_request(
        &self,
        model: &SpendModel,
        params: &SpendParams,
        how: u8,
        rhythm: f64,
    ) -> Option<f64> {
        let spend = model.moments(params, how).0.max(self.awake.0);
        let requests = self.requests.mean.max(self.awake_requests) * rhythm;
        (spend > 0.0 && requests > 0.0).then(|| spend / requests)
    }

    /// The key's usual requests per minute (idle minutes count).
    pub(super) fn usual_requests(&self) -> f64 {
        self.requests.mean
    }

    /// The billable requests a minute the key sent half an hour to an hour ago ([`Reference`]);
    /// 0 until it is known.
    pub(super) fn reference_requests(&self) -> f64 {
        self.reference.marks[0].mean
    }
}

/// The factor of a key's usual requests for this hour, from its own daily rhythm of requests
/// (1 without seasonality, never below 0.05). Learnt from its requests, not borrowed from its
/// spend: a key whose single requests vary tenfold in cost has a noisy spend rhythm and a
/// steady request one.
pub fn rhythm(season: Option<&Seasonal>, params: &SpendParams, how: u8) -> f64 {
    season
        .map_or(1.0, |s| {
            s.factor_from(
                how,
                params.config.season_prior_windows,
                params.config.season_min_windows,
            )
        })
        .max(0.05)
}

/// How a key's long runs are judged in this hour: by where they stand now once the key's
/// requests rhythm for the hour is known (its bucket counted, [`rhythm`]), else by their
/// whole length ([`Judged`]).
pub fn judged(season: Option<&Seasonal>, params: &SpendParams, how: u8) -> Judged {
    match season {
        Some(s) if s.count(how) >= params.config.season_min_windows => Judged::Recent,
        _ => Judged::Run,
    }
}

/// One closed minute of a key's spend folded as the detector folds it: first the sustained
/// evidence, against the baselines as they stood before the minute, then the baselines: spend,
/// its hour's factor and the key's requests and theirs (at a tenth of the weight while a rise
/// is at the alarm, so that an incident is not learnt as the key's usual while it is told). The
/// engine and the console's key chart both go through here, so the chart shows what was judged.
/// `row`: the minute's spend, requests and tokens (None when idle); `crowd`: how busy the other
/// keys were ([`Crowd::factor`]; 1 where only this key is known).
#[allow(clippy::too_many_arguments)]
pub fn fold_key_minute(
    model: &mut SpendModel,
    evidence: &mut Evidence,
    requests_season: &mut Option<Seasonal>,
    tokens: &Ewma,
    params: &SpendParams,
    config: &SustainedConfig,
    row: Option<(f64, u64, u64)>,
    how: u8,
    crowding: Crowding,
) {
    if params.config.seasonality != requests_season.is_some() {
        *requests_season = params.config.seasonality.then(|| Seasonal::new(false));
    }
    let factor = rhythm(requests_season.as_ref(), params, how);
    let usual_before = evidence.requests;
    *evidence = evidence.after_minute(
        model, tokens, params, config, row, how, crowding, 1.0, factor,
    );
    if let Some(season) = requests_season {
        if usual_before.n > 1 && usual_before.mean > 0.0 {
            let requests = row.map_or(0, |r| r.1) as f64;
            let weight = evidence.count.learning_weight(config);
            let young_weight =
                season.first_visit_weight(how, params.config.season_min_windows, weight);
            season.update(
                how,
                requests / usual_before.mean,
                params.season_alpha() * weight,
                young_weight,
                20.0,
            );
        }
    }
    let count_weight = if model.windows() >= COUNT_AFTER_MINUTES {
        evidence.count.learning_weight(config)
    } else {
        1.0
    };
    let weight = evidence.spend.learning_weight(config).min(count_weight);
    model.update_weighted(params, row.map_or(0.0, |r| r.0), how, weight);
}

impl Engine {
    /// The sustained rule over the minutes not folded yet, the open one included (judged on the
    /// share of it elapsed at `now_s`).
    /// `fired` holds the keys the per-minute rule already flagged this cycle.
    pub(super) fn assess_sustained(
        &self,
        data: &CycleData,
        known: &[Option<&KeyState>],
        now_s: u32,
        crowd: &Crowd,
        fired: &FxMap<&str, (bool, bool)>,
        out: &mut Vec<Candidate>,
    ) {
        let config = &self.config.spend_spike.sustained;
        if !config.enabled {
            return;
        }
        // Each key's model mix this cycle, indexed on first need (a price jump is rare).
        let mixes: std::cell::OnceCell<FxMap<&str, Vec<&Usage>>> = std::cell::OnceCell::new();
        // Rows come ordered by key and minute: a key's unfolded minutes build on each other.
        let mut carried: Option<(&str, u32, Evidence)> = None;
        for (row, state) in Engine::unfolded(data, known, self.folded_through) {
            let Some(impact_usd) = self.impact_usd(&row.api_key_id, &row.project) else {
                continue;
            };
            if !self.key_enabled(Detector::SpendSpike, &row.api_key_id, &row.project) {
                continue;
            }
            let params = &self.spend_params;
            let mut evidence = state.sustained;
            let mut next = state.spend.last_folded;
            if let Some((key, minute, held)) = carried {
                if key == row.api_key_id && minute < row.minute {
                    (evidence, next) = (held, minute + MINUTE);
                }
            }
            // Closed minutes without a row were idle: they count as zero, and weaken the case.
            while next < row.minute {
                let how = hour_of_week(i64::from(next) * 1000);
                evidence = evidence.after_minute(
                    &state.spend.model,
                    &state.tokens,
                    params,
                    config,
                    None,
                    how,
                    crowd.factors(
                        next,
                        0,
                        state.usual_requests_at(params, next),
                        state.sustained.reference_requests(),
                    ),
                    1.0,
                    rhythm(state.requests_season.as_ref(), params, how),
                );
                next += MINUTE;
            }
            let how = hour_of_week(i64::from(row.minute) * 1000);
            let row_rhythm = rhythm(state.requests_season.as_ref(), params, how);
            let by = judged(state.requests_season.as_ref(), params, how);
            let usual = state.sustained.usual_requests() * row_rhythm;
            let crowding = crowd.for_key(row, state, params);
            evidence = evidence.after_minute(
                &state.spend.model,
                &state.tokens,
                params,
                config,
                Some((row.cost_usd, billable(row), row.tokens)),
                how,
                crowding,
                elapsed_share(row.minute, now_s),
                row_rhythm,
            );
            carried = Some((&row.api_key_id, row.minute, evidence));
            if self.explain.contains(&row.api_key_id) {
                tracing::info!(
                    key = %row.api_key_id,
                    minute = row.minute,
                    elapsed = elapsed_share(row.minute, now_s),
                    crowd = crowding.usual,
                    crowd_since_reference = crowding.reference,
                    rhythm = row_rhythm,
                    usual_requests = usual,
                    awake_requests = evidence.awake_requests,
                    spend_widening = evidence.spend_dispersion.widening(),
                    count_widening = evidence.count_dispersion.widening(),
                    judged = ?by,
                    cost = row.cost_usd,
                    requests = billable(row),
                    spend = %evidence.spend.explain(config, by),
                    count = %evidence.count.explain(config, by),
                    price = %evidence.price.explain_needing(
                        config,
                        by,
                        evidence.price.ratio_needed_from(PRICE_JUMP, config)
                    ),
                    ramp = %evidence.ramp.explain_steady(config, by),
                    "spend evidence"
                );
            }

            let (spend_fired, tokens_fired) = fired
                .get(row.api_key_id.as_str())
                .copied()
                .unwrap_or_default();
            let level = |strength| {
                level_candidate(
                    row,
                    state,
                    &evidence,
                    params,
                    config,
                    impact_usd,
                    (how, row_rhythm, by),
                    strength,
                )
            };
            let ramp = || {
                ramp_candidate(
                    row,
                    state,
                    &evidence,
                    params,
                    config,
                    impact_usd,
                    (how, row_rhythm, by),
                )
            };
            let alarm = if spend_fired {
                None
            } else {
                level(Strength::Full)
                    .or_else(|| {
                        if evidence.price.sum < PRICE_EVIDENCE * config.threshold {
                            return None;
                        }
                        let usual = state
                            .spend
                            .model
                            .moments(params, how)
                            .0
                            .max(evidence.awake.0);
                        evidence
                            .price_alarm(config, usual, impact_usd)
                            .then(|| price_candidate(row, &evidence.price, usual, impact_usd))
                    })
                    .or_else(|| {
                        // Half the evidence is judged on whole minutes only: an open minute's
                        // first seconds say little, and at a live worker's 10 s cadence they
                        // paged on ordinary four-minute bursts (DEV 1-6, BENCHMARKS.md).
                        let half = self.config.spend_spike.compare_with_yesterday
                            && elapsed_share(row.minute, now_s) >= 1.0;
                        half.then(|| level(Strength::Half).or_else(ramp)).flatten()
                    })
            };
            if let Some(mut c) = alarm {
                if let Some(ratio) = evidence.price_jump(row) {
                    let usage = mixes.get_or_init(|| {
                        let mut by_key: FxMap<&str, Vec<&Usage>> = FxMap::default();
                        for u in data
                            .usage
                            .iter()
                            .filter(|u| u.minute >= self.folded_through)
                        {
                            by_key.entry(&u.api_key_id).or_default().push(u);
                        }
                        by_key
                    });
                    let run_start = c.window_start_s;
                    let mix = usage
                        .get(row.api_key_id.as_str())
                        .map_or(&[][..], Vec::as_slice);
                    describe_price_jump(
                        &mut c,
                        ratio,
                        mix,
                        run_start,
                        state.usual_model.as_deref(),
                    );
                }
                out.push(c);
            }
            let impact_tokens = self.config.spend_spike.impact_tokens_per_day * impact_usd
                / self
                    .config
                    .spend_spike
                    .impact_usd_per_day
                    .max(f64::MIN_POSITIVE);
            if !tokens_fired
                && impact_tokens > 0.0
                && evidence
                    .tokens
                    .alarm(config, MINUTES_PER_DAY, impact_tokens, by)
            {
                out.push(tokens_candidate(row, &evidence.tokens, config, by));
            }
        }
    }

    /// The impact floor for a key: its override's, else the setting. None when the key's spend
    /// is judged on its own terms (a raised dollar floor or a budget: a planned batch job).
    fn impact_usd(&self, key: &str, project: &str) -> Option<f64> {
        let default = self.config.spend_spike.impact_usd_per_day;
        match self.config.override_for(key, project) {
            Some(o) if o.impact_usd_per_day.is_some() => o.impact_usd_per_day,
            Some(o) if o.spend_on_own_terms() => None,
            _ => Some(default),
        }
    }
}

mod candidates;
mod crowd;

use candidates::*;
pub use crowd::Crowding;
pub(super) use crowd::{billable, elapsed_share, Crowd, UsualByHour};
pub(crate) use crowd::{crowd_weight, Rises};

#[cfg(test)]
mod tests;
