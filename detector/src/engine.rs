//! The detectors' state and rules, with no IO: per-entity models fed with closed minutes, and
//! each cycle's assessment of the minutes not yet folded (including the one still open, so a
//! monotone quantity such as spend can fire before its minute ends).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap as FxMap;

use serde_json::json;
use tripline_core::alert::Severity;
use tripline_core::config::{DetectConfig, Detector};
use tripline_core::models::ewma::{alpha_from_half_life, Ewma};
use tripline_core::models::geo;
use tripline_core::models::seasonal::hour_of_week;
use tripline_core::models::spend::{SpendModel, SpendParams};

use crate::data::{CycleData, KeyMinute, Usage};
use crate::familiar::Familiar;

pub use evict::Evictions;
use key_id::{CycleIds, KeyId};

/// The state of the key each of a cycle's key rows names, parallel to `CycleData::keys`.
type Known<'a> = Vec<Option<&'a KeyState>>;

mod evict;
mod fold;
mod key_id;
mod leaks;
mod providers;
mod retries;
mod spend;
mod sustained;

pub(crate) use sustained::{crowd_weight, Rises};
pub use sustained::{fold_key_minute, Crowding, Evidence};
mod travel;

/// Something a detector flagged this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub detector: Detector,
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    pub observed: f64,
    pub expected: f64,
    pub upper: f64,
    pub score: f64,
    pub window_start_s: u32,
    pub window_end_s: u32,
    pub summary: String,
    pub facts: BTreeMap<String, serde_json::Value>,
}

impl Candidate {
    fn new(
        detector: Detector,
        labels: &[(&str, &str)],
        window_start_s: u32,
        window_end_s: u32,
    ) -> Self {
        let mut map: BTreeMap<String, String> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.insert("detector".into(), detector.as_str().into());
        Self {
            detector,
            labels: map,
            severity: Severity::Warning,
            observed: 0.0,
            expected: 0.0,
            upper: 0.0,
            score: 0.0,
            window_start_s,
            window_end_s,
            summary: String::new(),
            facts: BTreeMap::new(),
        }
    }

    pub fn api_key_id(&self) -> Option<&str> {
        self.labels.get("api_key_id").map(String::as_str)
    }
}

/// A spend baseline for one entity, fed one value per minute (zero when idle).
#[derive(Debug, Clone)]
struct SpendTrack {
    model: SpendModel,
    last_folded: u32,
    /// The last closed minute the entity had a row in (it was used): what idle eviction and the
    /// cap go by.
    last_active: u32,
}

impl SpendTrack {
    fn new(params: &SpendParams, first: u32) -> Self {
        Self {
            model: SpendModel::new(params),
            last_folded: first,
            last_active: first,
        }
    }
}

/// Everything remembered about one API key.
#[derive(Debug, Clone)]
struct KeyState {
    project: String,
    spend: SpendTrack,
    familiar: Familiar,
    /// Distinct client IPs per active minute.
    ips: Ewma,
    /// Requests and tokens per active minute, and the share of requests answered 429 or 5xx.
    traffic: Ewma,
    tokens: Ewma,
    /// The last closed minute's retry counts, for the retry window that spans two minutes.
    previous: Option<MinuteCounts>,
    throttled: Ewma,
    /// The last country the key was used from, and the far-apart ones it uses at once.
    whereabouts: travel::Whereabouts,
    /// Distinct countries per active minute.
    countries: Ewma,
    /// Evidence of a raised spend and token rate over several minutes (see `sustained.rs`).
    sustained: sustained::Evidence,
    /// The key's daily rhythm of billable requests, with `model.seasonality` (see
    /// `sustained.rs`).
    requests_season: Option<tripline_core::models::seasonal::Seasonal>,
    /// The model the key called most in its last ordinary sampled minute (one in ten), to name
    /// what its spend moved away from when its price per token jumps.
    usual_model: Option<Box<str>>,
}

impl KeyState {
    /// The key's usual billable requests a minute at `minute`, its daily rhythm included.
    fn usual_requests_at(&self, params: &SpendParams, minute: u32) -> f64 {
        let how = hour_of_week(i64::from(minute) * 1000);
        self.sustained.usual_requests()
            * sustained::rhythm(self.requests_season.as_ref(), params, how)
    }
}

/// A key's retry counts in one closed minute (u32: a minute of one key fits).
#[derive(Debug, Clone, Copy, Default)]
struct MinuteCounts {
    minute: u32,
    requests: u32,
    retries: u32,
    failures: u32,
    attempts: u32,
    successes: u32,
}

/// Spend excused from the shared baselines, by (minute, project) and by minute.
#[derive(Default)]
struct Excused<'a> {
    project: FxMap<(u32, &'a str), f64>,
    overall: FxMap<u32, f64>,
}

impl Excused<'_> {
    fn get(&self, minute: u32, project: Option<&str>) -> f64 {
        match project {
            Some(p) => self.project.get(&(minute, p)).copied(),
            None => self.overall.get(&minute).copied(),
        }
        .unwrap_or(0.0)
    }
}

pub struct Engine {
    config: DetectConfig,
    spend_params: SpendParams,
    /// Reached by a digest of the key id (see `key_id.rs`), Fx hashing its low half.
    /// Boxed: the table's empty slots (up to half of it after a growth, and it never shrinks)
    /// then cost a pointer each rather than a whole key's state.
    keys: FxMap<KeyId, Box<KeyState>>,
    projects: FxMap<String, SpendTrack>,
    overall: Option<SpendTrack>,
    /// End users (the events' `user`) seen in the last day, for their impossible travel.
    /// The std hasher: user names are chosen by clients (Fx hashing could be flooded).
    users: HashMap<String, travel::UserState>,
    /// Usual upstream attempts and failures per (provider, model), for provider storms.
    providers: BTreeMap<(String, String), providers::ProviderState>,
    ip_alpha: f64,
    /// Minutes before this (epoch seconds) are folded into the models.
    pub folded_through: u32,
    /// Entities forgotten so far (idle, or over the cap).
    evicted: Evictions,
    /// Every key's usual requests per minute for each hour of the day, as weights in the
    /// crowd, summed at the last fold (the crowd's usual).
    usual_requests: sustained::UsualByHour,
    /// Every key's requests a minute half an hour to an hour ago ([`sustained`]'s reference),
    /// as weights in the crowd (`sustained::crowd_weight`), summed at the last fold.
    reference_requests: f64,
    /// Keys whose retry_storm candidate waits, or waited, for their provider's alert (see
    /// [`providers::Caught::Unclear`]). A key waits once per episode.
    unclear: FxMap<String, providers::Waiting>,
    /// Provider/models judged storming lately: when last, and their failed share then.
    recent_storms: BTreeMap<(String, String), (u32, f64)>,
    /// Keys whose spend evidence is logged each time it is judged (`TRIPLINE_EXPLAIN_KEYS`,
    /// comma-separated ids): how to see why a key did or did not page.
    explain: Vec<String>,
}

const MINUTE: u32 = 60;

impl Engine {
    pub fn new(
        config: DetectConfig,
    ) -> Result<Self, tripline_core::models::spend::SpendConfigError> {
        let spend_params = config.spend_spike.model.validate()?;
        Ok(Self {
            config,
            spend_params,
            keys: FxMap::default(),
            projects: FxMap::default(),
            overall: None,
            users: HashMap::new(),
            providers: BTreeMap::new(),
            ip_alpha: alpha_from_half_life(60.0),
            folded_through: 0,
            evicted: Evictions::default(),
            usual_requests: sustained::UsualByHour::default(),
            reference_requests: 0.0,
            unclear: FxMap::default(),
            recent_storms: BTreeMap::new(),
            explain: std::env::var("TRIPLINE_EXPLAIN_KEYS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Swaps thresholds without losing any learned state (config reload).
    pub fn reconfigure(
        &mut self,
        config: DetectConfig,
    ) -> Result<(), tripline_core::models::spend::SpendConfigError> {
        self.spend_params = config.spend_spike.model.validate()?;
        self.config = config;
        Ok(())
    }

    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Projects and end users tracked (keys: [`Engine::tracked_keys`]).
    pub fn tracked_projects_and_users(&self) -> (usize, usize) {
        (self.projects.len(), self.users.len())
    }

    /// Entities forgotten since the engine was created.
    pub fn evictions(&self) -> Evictions {
        self.evicted
    }

    /// Assesses every minute from `folded_through` up to `now_s`, returns what is flagged, and
    /// folds the minutes that are closed (ended more than the allowed lateness ago).
    /// With `quiet`, state is updated but nothing is flagged (history replay at start-up).
    pub fn cycle(&mut self, data: &CycleData, now_s: u32, quiet: bool) -> Vec<Candidate> {
        // Minute m is closed once m + 60 s + lateness has passed: starts below this are closed.
        let closed_before =
            (now_s.saturating_sub(self.config.allowed_lateness_s as u32) / MINUTE) * MINUTE;
        let mut out = Vec::new();
        let mut retry_notes = retries::RetryNotes::default();
        let ids = CycleIds::of(data);
        // Each key row's state, looked up once for every assessment (they only read it).
        let known = self.known(&ids.keys);
        // How busy everyone is, minute by minute: for the sustained rule, and folded with it.
        let crowd = sustained::Crowd::new(self, data, &known, self.folded_through, now_s);
        if !quiet {
            if self.config.spend_spike.enabled {
                self.assess_spend(data, &known, now_s, &crowd, &mut out);
            }
            if self.config.leaked_key.enabled {
                self.assess_leaks(data, &ids, &mut out);
            }
            if self.config.retry_storm.enabled {
                self.assess_retries(data, &known, now_s, &mut out, &mut retry_notes);
            }
            if self.config.cross_region.enabled {
                self.assess_travel(data, &ids, &mut out);
            }
        }
        drop(known);
        self.remember_retries(retry_notes, now_s);
        self.fold_providers(data, closed_before);
        self.fold(data, &ids, closed_before, &crowd);
        out
    }

    /// Notes the keys whose storm candidates were unclear this cycle (and whether they paged)
    /// and the provider/models storming, and forgets those that have not been for
    /// `UNCLEAR_FORGET_S` and `STORM_REMEMBERED_S`.
    fn remember_retries(&mut self, notes: retries::RetryNotes, now_s: u32) {
        for (provider, model, share) in notes.storms {
            self.recent_storms.insert((provider, model), (now_s, share));
        }
        self.recent_storms
            .retain(|_, (at, _)| now_s.saturating_sub(*at) <= providers::STORM_REMEMBERED_S);
        for (key, paged) in notes.unclear {
            let waiting = self.unclear.entry(key).or_insert(providers::Waiting {
                since: now_s,
                last: now_s,
                paged: false,
            });
            waiting.last = now_s;
            waiting.paged |= paged;
        }
        self.unclear
            .retain(|_, w| now_s.saturating_sub(w.last) <= providers::UNCLEAR_FORGET_S);
    }

    /// Carries what a re-warmed engine cannot learn from history over from the live one: the
    /// keys waiting for their provider's alert, and the storms they may be folded into.
    pub fn carry_over_from(&mut self, live: &mut Engine) {
        self.unclear = std::mem::take(&mut live.unclear);
        self.recent_storms = std::mem::take(&mut live.recent_storms);
    }

    /// The key rows from minute `from` on whose key is tracked, with its state.
    fn unfolded<'a>(
        data: &'a CycleData,
        known: &'a [Option<&'a KeyState>],
        from: u32,
    ) -> impl Iterator<Item = (&'a KeyMinute, &'a KeyState)> {
        data.keys
            .iter()
            .zip(known)
            .filter_map(move |(row, state)| Some((row, (*state)?)).filter(|_| row.minute >= from))
    }

    /// The state of the key each of `ids` names (`None`: not tracked yet).
    fn known(&self, ids: &[KeyId]) -> Known<'_> {
        ids.iter()
            .map(|id| self.keys.get(id).map(|s| &**s))
            .collect()
    }

    fn key_enabled(&self, detector: Detector, key: &str, project: &str) -> bool {
        self.config.enabled_for(detector, key, project)
    }

    /// The spend model's parameters for a key or project: the defaults, borrowed (a copy per
    /// row was a twentieth of a cycle), unless an override sets its own dollar floor.
    fn params_for(&self, key: &str, project: &str) -> Cow<'_, SpendParams> {
        match self
            .config
            .override_for(key, project)
            .and_then(|o| o.min_abs_usd)
        {
            Some(floor) => {
                let mut params = self.spend_params.clone();
                params.config.min_abs_usd = floor;
                Cow::Owned(params)
            }
            None => Cow::Borrowed(&self.spend_params),
        }
    }
}

#[cfg(test)]
mod tests;
