//! Labelled incidents: what the detectors must find (and what they must not), planned on top of
//! the background traffic, and the ground truth that says where they are.
//!
//! A plan ([`IncidentPlan`]) names a kind, a window relative to the run's start and a key
//! index; the simulator resolves it against its keys (concrete `api_key_id`, attacker
//! addresses, the far country, ...) and reports the result as [`Incident`]s, the ground truth.
//! How each kind changes the traffic is described on [`IncidentKind`]; the generation itself is
//! in `inject.rs`.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tripline_core::config::Detector;

/// What an incident does to the traffic: the detectors' incidents in several sizes, plus benign
/// events that look unusual and must not alert.
///
/// Spend incidents are drawn per incident, under the run's seed, from wide ranges instead of
/// fixed shapes: the window's length by [`standard_scenario`] (from the seed), the multiple or
/// the model by the incident's own random stream. They keep the key's own token shape and are
/// not lengthened or lifted to any dollar floor: a small key going x3 is a small incident. The
/// only condition is that the incident matters by the product's own default impact floor: its
/// extra spend, if it went on for a day, is at least twice
/// `SpendSpikeConfig::default().impact_usd_per_day` ($10 a day at $5). A draw that falls short
/// is drawn again (up to 8 times), then the incident moves to the next bigger key (by share)
/// that is free at its time. The ground truth's note states the key's usual $/min, the multiple
/// (or the model and its price ratio), the extra $/day and the minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentKind {
    /// The key's requests times a multiple drawn log-uniform in 2-8, in its own mix of models,
    /// addresses, users and tokens (3-30 minutes in the standard scenario).
    SpendSpikeSmall,
    /// The same with a multiple drawn log-uniform in 8-50.
    SpendSpikeLarge,
    /// Extra requests (the key's own kind) growing linearly over the window from none to a final
    /// multiple drawn log-uniform in 2-10 of the key's own (15-60 minutes in the standard
    /// scenario). Its onset, from which time to detect counts, is not its start (when nothing
    /// extra happens yet) but the moment its extra reaches 1x the key's own, the key at 2x:
    /// `duration / (final - 1)` after the start (at most a minute before its end).
    SpendRamp,
    /// A price shift: for the window (5-30 minutes in the standard scenario) every one of the
    /// key's own requests goes to one model, drawn from the simulator's catalog so that its price
    /// per token (at the key's token mix) is 5-200x the key's usual models, at the same request
    /// rate and tokens; where the catalog has nothing 5x pricier, its priciest model, at the
    /// ratio it has. No request is added.
    SpendPriceShift,
    /// A leaked key: a few probe requests on an expensive model family the key never called,
    /// from a hosting network in a new country with a new user agent, then a burst of hundreds
    /// of long requests from a dozen or more addresses of that network.
    LeakedKeyProbeThenBurst,
    /// A retry storm without backoff: the key's requests to one provider get 429/503, clients
    /// retry at once (up to attempt 6, same `idempotency_key`) and the gateway retries upstream
    /// up to three times; provider attempts per success ≥ 3.
    RetryStormNoBackoff,
    /// The same error burst, but clients back off 0.5, 1, 2, 4 s and the gateway does not
    /// retry: a retry storm by retry share, of lower severity (amplification about 2).
    RetryStormWithBackoff,
    /// A provider storm without backoff: one provider/model (the busiest one not central to
    /// another incident at the time) fails 30-90 % of upstream attempts (429/503) for every key
    /// calling it, except keys under another incident then; the gateway retries at once (up to
    /// three attempts) and half of the clients retry at once too (up to three attempts), so its
    /// attempts rise with the failures (×1.4 at 30 %, ×2.2 at 60 %). No extra first attempts.
    /// The ground truth's key is `provider/model`: the provider/model's alert is the answer, and
    /// key-level storm alerts of the keys caught in it are not.
    ProviderStormNoBackoff,
    /// The same failing provider/model, but the gateway does not retry and clients back off
    /// 0.5, 1, 2, 4 s (up to five attempts): attempts ×1.4 at 30 %, ×2.2 at 60 %; a provider
    /// storm of lower severity.
    ProviderStormWithBackoff,
    /// The key is used from its home country and, within minutes, from a country over
    /// 8,000 km away, alternating every 2.5 minutes.
    ImpossibleTravel,
    /// One IP sends requests with 40-60 non-existent keys, every one answered 401.
    KeyScanning,
    /// Benign: every key's rate rises smoothly to ×2 and back (a raised cosine over the window),
    /// as a daily peak does.
    BenignDailyPeak,
    /// Benign: a planned batch job, ×10 the key's requests with 3× the prompt tokens, not
    /// streamed (at least $4 a minute more), on a key whose budget was raised; the ground
    /// truth's note gives the per-key override that covers it.
    BenignPlannedBatch,
    /// Benign: a key that sends its first request at the window's start, then its normal,
    /// moderate traffic from one country.
    BenignNewKey,
    /// Benign: the key falls silent for hours, then is used from another country, no faster
    /// than 700 km/h (an airliner's pace): a move or a flight, not impossible travel.
    BenignSlowRegionMove,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 15] = [
        Self::SpendSpikeSmall,
        Self::SpendSpikeLarge,
        Self::SpendRamp,
        Self::SpendPriceShift,
        Self::LeakedKeyProbeThenBurst,
        Self::RetryStormNoBackoff,
        Self::RetryStormWithBackoff,
        Self::ProviderStormNoBackoff,
        Self::ProviderStormWithBackoff,
        Self::ImpossibleTravel,
        Self::KeyScanning,
        Self::BenignDailyPeak,
        Self::BenignPlannedBatch,
        Self::BenignNewKey,
        Self::BenignSlowRegionMove,
    ];

    /// The name in the ground truth and accepted by [`FromStr`], e.g. `spend_spike_small`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpendSpikeSmall => "spend_spike_small",
            Self::SpendSpikeLarge => "spend_spike_large",
            Self::SpendRamp => "spend_ramp",
            Self::SpendPriceShift => "spend_price_shift",
            Self::LeakedKeyProbeThenBurst => "leaked_key_probe_then_burst",
            Self::RetryStormNoBackoff => "retry_storm_no_backoff",
            Self::RetryStormWithBackoff => "retry_storm_with_backoff",
            Self::ProviderStormNoBackoff => "provider_storm_no_backoff",
            Self::ProviderStormWithBackoff => "provider_storm_with_backoff",
            Self::ImpossibleTravel => "impossible_travel",
            Self::KeyScanning => "key_scanning",
            Self::BenignDailyPeak => "benign_daily_peak",
            Self::BenignPlannedBatch => "benign_planned_batch",
            Self::BenignNewKey => "benign_new_key",
            Self::BenignSlowRegionMove => "benign_slow_region_move",
        }
    }

    /// The detector that must flag it: `spend_spike`, `leaked_key`, `retry_storm` or
    /// `cross_region`; `None` for the benign kinds, which must not alert at all.
    pub fn detector(&self) -> Option<Detector> {
        match self {
            Self::SpendSpikeSmall
            | Self::SpendSpikeLarge
            | Self::SpendRamp
            | Self::SpendPriceShift => Some(Detector::SpendSpike),
            Self::LeakedKeyProbeThenBurst | Self::KeyScanning => Some(Detector::LeakedKey),
            Self::RetryStormNoBackoff
            | Self::RetryStormWithBackoff
            | Self::ProviderStormNoBackoff
            | Self::ProviderStormWithBackoff => Some(Detector::RetryStorm),
            Self::ImpossibleTravel => Some(Detector::CrossRegion),
            Self::BenignDailyPeak
            | Self::BenignPlannedBatch
            | Self::BenignNewKey
            | Self::BenignSlowRegionMove => None,
        }
    }

    pub fn is_benign(&self) -> bool {
        self.detector().is_none()
    }

    /// Other detectors whose alert on the incident's key inside its window is right too, not a
    /// false positive: a leaked key abused from abroad while its owner keeps using it is also
    /// impossible travel and a spend spike; a key used from a far country is also a new country.
    pub fn also_detected_by(&self) -> &'static [Detector] {
        match self {
            Self::LeakedKeyProbeThenBurst => &[Detector::SpendSpike, Detector::CrossRegion],
            Self::ImpossibleTravel => &[Detector::LeakedKey],
            Self::RetryStormNoBackoff | Self::RetryStormWithBackoff => &[Detector::SpendSpike],
            _ => &[],
        }
    }

    /// Whether [`IncidentPlan::key`] means anything: key scanning uses made-up keys, the daily
    /// peak lifts every key and a provider storm hits a provider/model (every key calling it
    /// that is free at the time).
    pub fn targets_key(&self) -> bool {
        !matches!(
            self,
            Self::KeyScanning
                | Self::BenignDailyPeak
                | Self::ProviderStormNoBackoff
                | Self::ProviderStormWithBackoff
        )
    }

    /// A spend incident drawn per incident (multiple or model, key, minutes), held to the
    /// impact floor: the spikes, the ramp and the price shift (not the planned batch).
    pub fn is_drawn_spend(&self) -> bool {
        matches!(
            self,
            Self::SpendSpikeSmall | Self::SpendSpikeLarge | Self::SpendRamp | Self::SpendPriceShift
        )
    }

    /// A provider storm: its entity is a provider/model, not a key.
    pub fn is_provider_storm(&self) -> bool {
        matches!(
            self,
            Self::ProviderStormNoBackoff | Self::ProviderStormWithBackoff
        )
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incident name that is not one of [`IncidentKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIncidentKind(pub String);

impl fmt::Display for UnknownIncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown incident kind {:?}", self.0)
    }
}

impl std::error::Error for UnknownIncidentKind {}

impl FromStr for IncidentKind {
    type Err = UnknownIncidentKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| UnknownIncidentKind(s.to_owned()))
    }
}

/// One incident to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentPlan {
    pub kind: IncidentKind,
    /// Start, in ms after [`crate::SimConfig::start_ms`].
    pub offset_ms: i64,
    /// Length of the window, in ms. For [`IncidentKind::BenignSlowRegionMove`] the key is silent
    /// for all of it but the last `min(30 min, duration / 4)`, and the window grows if no
    /// country is reachable at 700 km/h in that time; for [`IncidentKind::BenignNewKey`] it is
    /// how long the new key counts as new (it keeps sending afterwards).
    pub duration_ms: i64,
    /// Index of the target key (`key-0007` is 7). Ignored where
    /// [`IncidentKind::targets_key`] is false. A drawn spend incident
    /// ([`IncidentKind::is_drawn_spend`]) moves to a bigger key free at its time when no draw
    /// on this one matters (see [`IncidentKind`]); the ground truth names the key it ran on.
    pub key: usize,
}

impl IncidentPlan {
    /// The span (offset ms) the plan holds its key for, quiet gaps included: a new key has no
    /// past and a moved key no future at home, so both hold their key for good.
    pub(crate) fn hold_ms(&self) -> (i64, i64) {
        match self.kind {
            IncidentKind::BenignNewKey => (i64::MIN, i64::MAX),
            IncidentKind::BenignSlowRegionMove => (self.offset_ms - GAP_MS, i64::MAX),
            _ => (
                self.offset_ms - GAP_MS,
                self.offset_ms + self.duration_ms + GAP_MS,
            ),
        }
    }
}

/// One resolved incident: the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub kind: IncidentKind,
    /// The `api_key_id` it targets; the attacker's IP for [`IncidentKind::KeyScanning`]; `*`
    /// for [`IncidentKind::BenignDailyPeak`] (every key); `provider/model` for provider
    /// storms.
    pub key: String,
    /// The window, epoch ms. Every event the incident adds has its gateway `ts` in
    /// `start_ms..end_ms`.
    pub start_ms: i64,
    pub end_ms: i64,
    /// When it begins to count: the window start for a step in rate (spikes, retry storms),
    /// the first probe of a leaked key, the first far-away use of impossible travel, the first
    /// failed try of key scanning, and for a slow ramp (which starts at nothing extra) the
    /// moment its extra spend reaches the default dollar floor, $1 a minute. Time to detect
    /// counts from here.
    pub onset_ms: i64,
    /// What happens, with the concrete figures (size, addresses, countries, expected spend).
    pub note: String,
}

impl Incident {
    pub fn detector(&self) -> Option<Detector> {
        self.kind.detector()
    }

    /// One line of JSON: `kind`, `detector` (null when benign), `key`, `start`/`end` (RFC 3339
    /// UTC), `start_ms`/`end_ms`, `also_detected_by`, `note`.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "detector": self.detector().map(Detector::as_str),
            "key": self.key,
            "start": tripline_core::time::format_ms(self.start_ms),
            "end": tripline_core::time::format_ms(self.end_ms),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "onset": tripline_core::time::format_ms(self.onset_ms),
            "onset_ms": self.onset_ms,
            "also_detected_by": self.kind.also_detected_by().iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "note": self.note,
        })
        .to_string()
    }
}

const MIN: i64 = 60_000;
/// Clean traffic before the first incident: the spend model needs 30 one-minute windows, the
/// leaked-key detector 30 minutes of a key's history.
pub const STANDARD_WARMUP_MS: i64 = 40 * MIN;
/// Quiet time between two incidents of one lane, and kept free around each key's incidents.
const GAP_MS: i64 = 10 * MIN;
/// Nothing ends in the last minutes of the run, so that every window closes inside it.
const TAIL_MS: i64 = 5 * MIN;
/// The slow move's silence when the run is long enough (Frankfurt to New York by air, with a
/// night's sleep), and the shortest planned: every home has a country within 4 h at 700 km/h.
const SLOW_MOVE_GAP_MS: i64 = 12 * 60 * MIN;
const SLOW_MOVE_MIN_GAP_MS: i64 = 4 * 60 * MIN;
const SLOW_MOVE_AFTER_MS: i64 = 30 * MIN;

use IncidentKind::*;

/// (kind, minutes, preferred key index) in the order a lane runs them; [`DRAWN`] for a drawn
/// spend incident, whose minutes and key come from the run's seed.
type Lane = &'static [(IncidentKind, i64, usize)];
/// Minutes and key drawn from the run's seed.
const DRAWN: usize = usize::MAX;

/// Round one, four lanes side by side on distinct keys: security and reliability, long, spend,
/// and a second spend lane. The security lane goes first so that its kinds keep their keys.
const ROUND_ONE: [Lane; 4] = [
    &[
        (KeyScanning, 5, 0),
        (RetryStormWithBackoff, 8, 5),
        (ImpossibleTravel, 20, 4),
        (RetryStormNoBackoff, 8, 1),
        (LeakedKeyProbeThenBurst, 25, 3),
    ],
    &[(SpendRamp, 0, DRAWN), (BenignNewKey, 60, 12)],
    &[
        (SpendSpikeSmall, 0, DRAWN),
        (SpendSpikeLarge, 0, DRAWN),
        (BenignPlannedBatch, 40, 7),
    ],
    &[(SpendPriceShift, 0, DRAWN), (SpendSpikeSmall, 0, DRAWN)],
];
/// Round two (other keys, other sizes), from the middle of a run long enough for it.
const ROUND_TWO: [Lane; 4] = [
    &[
        (LeakedKeyProbeThenBurst, 25, 13),
        (RetryStormNoBackoff, 8, 14),
        (KeyScanning, 5, 0),
        (ImpossibleTravel, 20, 15),
    ],
    &[(SpendRamp, 0, DRAWN)],
    &[(SpendSpikeLarge, 0, DRAWN), (SpendSpikeSmall, 0, DRAWN)],
    &[(SpendPriceShift, 0, DRAWN)],
];
/// The keys other kinds prefer: drawn spend incidents are drawn among the others (while there
/// are any), so that they do not push the other kinds off their keys.
const RESERVED_KEYS: [usize; 11] = [0, 1, 3, 4, 5, 7, 10, 12, 13, 14, 15];
const DAILY_PEAK_MIN: i64 = 60;
const PROVIDER_STORM_MIN: i64 = 10;
const SLOW_MOVE_KEY: usize = 10;

/// A drawn spend incident's window, in whole minutes, uniform in this range.
pub(crate) fn drawn_minutes(kind: IncidentKind) -> Option<(i64, i64)> {
    match kind {
        SpendSpikeSmall | SpendSpikeLarge => Some((3, 30)),
        SpendRamp => Some((15, 60)),
        SpendPriceShift => Some((5, 30)),
        _ => None,
    }
}

/// Every kind spread over a run of `duration_ms` from `start_ms` with `keys` keys, the spend
/// incidents' keys and windows drawn from `seed`: after [`STANDARD_WARMUP_MS`] of clean
/// traffic, four lanes run side by side on distinct keys, with 10 quiet minutes between the
/// incidents of a lane:
///
/// | lane | incidents (minutes) |
/// |---|---|
/// | security, reliability | key scanning (5), retry storm with backoff (8), impossible travel (20), retry storm without backoff (8), leaked key (25) |
/// | long | spend ramp (15-60), new key (60) |
/// | spend | small spike (3-30), large spike (3-30), planned batch (40) |
/// | spend two | price shift (5-30), small spike (3-30) |
///
/// then a provider storm without backoff (10) after both spend lanes, the daily peak (60) once
/// it and the security lane are done; a benign slow move on its own key from minute 50 (12 h of
/// silence when the run allows, at least 4 h, so runs from 5 h 30 min have it); and, from the
/// middle of a run long enough, a second round: a leaked key, a storm without backoff, key
/// scanning and impossible travel; a ramp; a large and a small spike; a price shift followed by
/// a provider storm with backoff (10). A provider storm spares the keys under another incident
/// near its time. Starts fall on whole minutes of event time.
///
/// Round one ends after 4 h 10 min at the latest (all but the slow move and the storm with
/// backoff fit in 4 h 30 min whatever the seed), round two 1 h 30 min after it starts; what
/// would not end 5 minutes before the run does is left out: 5 h 30 min hold every kind, 8 h every
/// kind and 3 small
/// spikes, 2 large, 2 ramps and 2 price shifts whatever the seed. A drawn spend incident's key
/// is drawn uniformly over the keys the other kinds do not prefer (from the busiest to the
/// quietest); the others prefer fixed keys, `key-0000` to `key-0015`. With fewer keys a plan
/// takes the next key free at its time, and is left out when none is (a key's incidents never
/// overlap, and stay 10 minutes apart).
pub fn standard_scenario(
    start_ms: i64,
    duration_ms: i64,
    keys: usize,
    seed: u64,
) -> Vec<IncidentPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A stream of its own: the keys use 1, the background 0, the incidents 100 and up.
    rng.set_stream(3);
    let mut layout = Layout {
        start_ms,
        limit_ms: duration_ms - TAIL_MS,
        keys,
        plans: Vec::new(),
        busy: vec![Vec::new(); keys],
        rng,
    };
    if keys == 0 || layout.limit_ms <= STANDARD_WARMUP_MS {
        return Vec::new();
    }
    let [security, long, spend, spend_two] = ROUND_ONE;
    let security_end = layout.lane(security, STANDARD_WARMUP_MS);
    layout.lane(long, STANDARD_WARMUP_MS);
    let spend_end = layout
        .lane(spend, STANDARD_WARMUP_MS)
        .max(layout.lane(spend_two, STANDARD_WARMUP_MS));
    // A provider storm after both spend lanes (every key), then the daily peak.
    let storm_at = layout.align(spend_end + GAP_MS);
    let storm_end = if layout.place(
        ProviderStormNoBackoff,
        storm_at,
        PROVIDER_STORM_MIN * MIN,
        0,
    ) {
        storm_at + PROVIDER_STORM_MIN * MIN
    } else {
        spend_end
    };
    let peak_at = security_end.max(storm_end) + GAP_MS;
    layout.place(BenignDailyPeak, peak_at, DAILY_PEAK_MIN * MIN, 0);
    let round_one_end = layout
        .plans
        .iter()
        .map(|p| p.offset_ms + p.duration_ms)
        .max()
        .unwrap_or(0);

    let move_at = layout.align(STANDARD_WARMUP_MS + GAP_MS);
    let gap = SLOW_MOVE_GAP_MS.min(layout.limit_ms - move_at - SLOW_MOVE_AFTER_MS);
    if gap >= SLOW_MOVE_MIN_GAP_MS {
        layout.place(
            BenignSlowRegionMove,
            move_at,
            gap + SLOW_MOVE_AFTER_MS,
            SLOW_MOVE_KEY,
        );
    }

    let round_two_at = (round_one_end + 2 * GAP_MS).max(duration_ms / 2);
    let mut price_end = round_two_at;
    for (i, lane) in ROUND_TWO.iter().enumerate() {
        let end = layout.lane(lane, round_two_at);
        if i == ROUND_TWO.len() - 1 {
            price_end = end;
        }
    }
    // And one with backoff after round two's price shift, where the run has room for it.
    if price_end > round_two_at {
        layout.place(
            ProviderStormWithBackoff,
            price_end + GAP_MS,
            PROVIDER_STORM_MIN * MIN,
            0,
        );
    }
    layout.plans.sort_by_key(|p| (p.offset_ms, p.kind, p.key));
    layout.plans
}

/// Length of the [`demo_scenario`]'s incidents.
const DEMO_INCIDENT_MIN: i64 = 5;

/// What a first run should see within minutes, for `scripts/demo.sh`: from the run's second
/// minute, side by side on distinct keys, a leaked key (`key-0003`), impossible travel
/// (`key-0004`), key scanning, and from the third a retry storm without backoff (`key-0001`) and
/// a large spend spike (drawn on `key-0002` or a bigger key), each [`DEMO_INCIDENT_MIN`] minutes
/// long. There is no warm-up: the demo backfills the keys' history first, as a team's gateway
/// logs would be there before Tripline. Incidents that would not end inside the run are left
/// out (a run of 7 minutes holds them all).
pub fn demo_scenario(start_ms: i64, duration_ms: i64, keys: usize, seed: u64) -> Vec<IncidentPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(3);
    let mut layout = Layout {
        start_ms,
        limit_ms: duration_ms,
        keys,
        plans: Vec::new(),
        busy: vec![Vec::new(); keys],
        rng,
    };
    if keys == 0 {
        return Vec::new();
    }
    let length = DEMO_INCIDENT_MIN * MIN;
    for (kind, at_min, key) in [
        (LeakedKeyProbeThenBurst, 1, 3),
        (ImpossibleTravel, 1, 4),
        (KeyScanning, 1, 0),
        (RetryStormNoBackoff, 2, 1),
        (SpendSpikeLarge, 2, 2),
    ] {
        layout.place(kind, at_min * MIN, length, key);
    }
    layout.plans
}

struct Layout {
    start_ms: i64,
    limit_ms: i64,
    keys: usize,
    plans: Vec<IncidentPlan>,
    /// Per key, the intervals (offset ms) its incidents occupy, gaps included.
    busy: Vec<Vec<(i64, i64)>>,
    /// Draws the spend incidents' minutes and keys.
    rng: ChaCha8Rng,
}

impl Layout {
    /// Places a lane's incidents one after the other from `from`; returns where the lane ends.
    fn lane(&mut self, lane: Lane, from: i64) -> i64 {
        let mut at = from;
        for &(kind, minutes, key) in lane {
            let (minutes, key) = match drawn_minutes(kind) {
                Some((lo, hi)) if key == DRAWN => {
                    let minutes = self.rng.random_range(lo..=hi);
                    (minutes, self.draw_key())
                }
                _ => (minutes, key),
            };
            at = self.align(at);
            if self.place(kind, at, minutes * MIN, key) {
                at += minutes * MIN + GAP_MS;
            }
        }
        at - GAP_MS
    }

    /// A key drawn uniformly over those no other kind prefers (all of them if none is left).
    fn draw_key(&mut self) -> usize {
        let free: Vec<usize> = (0..self.keys)
            .filter(|k| !RESERVED_KEYS.contains(k))
            .collect();
        if free.is_empty() {
            self.rng.random_range(0..self.keys)
        } else {
            free[self.rng.random_range(0..free.len())]
        }
    }

    /// The first whole minute of event time at or after `offset`.
    fn align(&self, offset: i64) -> i64 {
        let abs = self.start_ms + offset;
        abs.div_euclid(MIN) * MIN + if abs.rem_euclid(MIN) > 0 { MIN } else { 0 } - self.start_ms
    }

    /// Adds the plan if it fits in the run and a key is free for it.
    fn place(&mut self, kind: IncidentKind, offset: i64, duration: i64, key: usize) -> bool {
        let offset = self.align(offset);
        if offset + duration > self.limit_ms {
            return false;
        }
        let mut plan = IncidentPlan {
            kind,
            offset_ms: offset,
            duration_ms: duration,
            key: 0,
        };
        if kind.targets_key() {
            let (from, to) = plan.hold_ms();
            let free = |k: &usize| self.busy[*k].iter().all(|&(a, b)| to <= a || b <= from);
            let Some(k) = (0..self.keys).map(|i| (key + i) % self.keys).find(free) else {
                return false;
            };
            self.busy[k].push((from, to));
            plan.key = k;
        }
        self.plans.push(plan);
        true
    }
}
