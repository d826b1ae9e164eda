//! `[detect]`: evaluation cadence, sharding, and each detector's thresholds, with per-key and
//! per-project overrides. Every threshold has a documented default (see tripline.example.toml).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::models::spend::SpendModelConfig;
use crate::models::sustained::SustainedConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// How often the detectors evaluate (closed windows plus the current partial one).
    pub eval_interval_ms: u64,
    /// Events this late still count: a minute is closed this long after it ends.
    pub allowed_lateness_s: u64,
    /// History replayed from ClickHouse at start-up so that models are warm at once.
    pub history_hours: u64,
    /// A firing alert that is no longer flagged resolves after this long.
    pub resolve_after_s: u64,
    /// This worker evaluates the entities whose hash falls in its shard (fixed sharding; see
    /// `group` for sharing the shards by Kafka group membership instead).
    pub shard_index: u32,
    pub shard_count: u32,
    /// `[detect.group]`: workers share the shards by Kafka group membership. Read at start.
    pub group: GroupConfig,
    /// Keys, projects and end users unseen for this long are forgotten, so that memory and
    /// cycle time follow the entities in use, not every id ever seen. One that comes back is a
    /// new entity: it warms up again before its models may alert (no false alerts, but no
    /// alerts on it until then). A restart forgets what `history_hours` does not cover anyway.
    pub idle_evict_after_s: u64,
    /// At most this many keys (and as many projects and end users) are tracked; beyond it the
    /// keys with fewer than 30 active minutes go first, then the least recently seen. A
    /// backstop against a flood of new ids: idle eviction keeps ordinary traffic below it.
    pub max_tracked_keys: u64,
    /// Events stored after their minute was folded into the models (a backfill, a gateway's
    /// delayed logs) are counted; once this many have arrived, the models are rebuilt from
    /// history in the background and swapped in, quietly. 0 = never.
    pub rewarm_min_late_events: u64,
    pub spend_spike: SpendSpikeConfig,
    pub leaked_key: LeakedKeyConfig,
    pub retry_storm: RetryStormConfig,
    pub cross_region: CrossRegionConfig,
    /// Overrides per API key: `[detect.keys."key-7"]`.
    pub keys: BTreeMap<String, EntityOverride>,
    /// Overrides per project: `[detect.projects."search"]`.
    pub projects: BTreeMap<String, EntityOverride>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            eval_interval_ms: 5_000,
            allowed_lateness_s: 30,
            history_hours: 24,
            resolve_after_s: 300,
            shard_index: 0,
            shard_count: 1,
            group: GroupConfig::default(),
            idle_evict_after_s: 2 * 86_400,
            max_tracked_keys: 250_000,
            rewarm_min_late_events: 1_000,
            spend_spike: SpendSpikeConfig::default(),
            leaked_key: LeakedKeyConfig::default(),
            retry_storm: RetryStormConfig::default(),
            cross_region: CrossRegionConfig::default(),
            keys: BTreeMap::new(),
            projects: BTreeMap::new(),
        }
    }
}

/// Detector workers sharing the keys by Kafka group membership: each joins the consumer group
/// `group_id` on the coordination topic `topic`, whose partitions are the shards, and evaluates
/// the shards it is assigned. A worker that joins or dies rebalances the shards, with no
/// config edit (a dead one after `kafka.session_timeout_ms`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    pub enabled: bool,
    /// Partitions of the coordination topic when Tripline creates it: the most workers that can
    /// share the work. An existing topic keeps its partitions, and they are the shards.
    pub shards: u32,
    pub topic: String,
    pub group_id: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            shards: 6,
            topic: "tripline.detector.shards".into(),
            group_id: "tripline-detectors".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendSpikeConfig {
    pub enabled: bool,
    /// The per-minute spend model (`[detect.spend_spike.model]`): baseline memory, tail
    /// probability, the dollar floor (`min_abs_usd`) that keeps cents from paging anyone.
    pub model: SpendModelConfig,
    /// Also watch spend per project and overall.
    pub per_project: bool,
    pub overall: bool,
    /// Budgets for every key (None = no budget); per-key and per-project overrides win.
    pub hourly_budget_usd: Option<f64>,
    pub daily_budget_usd: Option<f64>,
    /// Tokens per minute a key must use above its usual count (and above six spreads and twice
    /// its usual) to alert on tokens: a runaway job on a model missing from the price table
    /// costs $0 here but not on the bill. 0 switches token alerts off.
    pub min_abs_tokens: u64,
    /// Sustained evidence (`[detect.spend_spike.sustained]`): a key whose spend (or tokens) stays
    /// well above its own baseline for a few minutes alerts even under the per-minute floors,
    /// when it is at least `min_ratio` times its usual and worth the impact floor below.
    pub sustained: SustainedConfig,
    /// What a sustained rise must add per day, if it went on, to alert (USD). Suits a small
    /// team: a key that spends $6 a day and starts spending $12 a day more is worth a message.
    pub impact_usd_per_day: f64,
    /// The same for tokens, for models missing from the price table. 0 switches it off.
    pub impact_tokens_per_day: f64,
    /// A sustained rise of a key's spend, requests or tokens a minute does not page while the
    /// key is not clearly busier (by two standard errors of the requests counted) than in its
    /// busiest ten minutes within half an hour of this time yesterday, times the other keys'
    /// rise since (read from ClickHouse): a steep daily peak is the key's day, not an incident.
    /// And a rise with half the evidence pages when the key is clearly `sustained.min_ratio`
    /// times as busy as then (detector/src/routine.rs).
    pub compare_with_yesterday: bool,
}

impl Default for SpendSpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: SpendModelConfig::default(),
            per_project: true,
            overall: true,
            hourly_budget_usd: None,
            daily_budget_usd: None,
            min_abs_tokens: 200_000,
            sustained: SustainedConfig::default(),
            impact_usd_per_day: 5.0,
            impact_tokens_per_day: 3_000_000.0,
            compare_with_yesterday: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakedKeyConfig {
    pub enabled: bool,
    /// Minutes of a key's history before "never seen" means something.
    pub min_history_minutes: u32,
    /// Requests showing something new needed to alert when a strong signal (hosting network,
    /// new model family, new client) comes with one other; three kinds at once need only one.
    pub min_new_requests: u64,
    pub new_country: bool,
    pub new_asn: bool,
    /// A hosting/datacenter network for a key that never used one.
    pub hosting_asn: bool,
    /// A model family the key never called.
    pub new_model_family: bool,
    /// A client (user agent) the key never used.
    pub new_user_agent: bool,
    /// Activity at an hour of the day the key has never been active in (after about two busy
    /// days of history); a weak signal, like a new country.
    pub idle_hours: bool,
    /// Distinct client IPs in a minute, as a multiple of the key's usual count, that alerts.
    pub ip_jump_factor: f64,
    /// ...and at least this many distinct IPs.
    pub min_distinct_ips: u64,
    /// One IP failing authentication (401/403) on this many keys within five minutes: key
    /// scanning.
    pub scan_min_keys: u64,
}

impl Default for LeakedKeyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_history_minutes: 30,
            min_new_requests: 3,
            new_country: true,
            new_asn: true,
            hosting_asn: true,
            new_model_family: true,
            new_user_agent: true,
            idle_hours: true,
            ip_jump_factor: 4.0,
            min_distinct_ips: 8,
            scan_min_keys: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryStormConfig {
    pub enabled: bool,
    /// Requests in a minute below which retry shares are too noisy to judge.
    pub min_requests: u64,
    /// Share of requests that are retries (`attempt > 1`) that alerts, judged by its one-sided
    /// 95 % Wilson lower bound: with 20 requests, 25 % needs about 40 % observed.
    pub retry_share: f64,
    /// Attempts per successful request that alerts (warning) and pages (critical).
    pub amplification: f64,
    pub critical_amplification: f64,
    /// Retries of one request arriving faster than this on average had no backoff.
    pub no_backoff_ms: f64,
    /// A storm building: requests at least `rate_rise` times the key's usual rate while its
    /// share of 429/5xx answers is `failure_rise` above its usual share, with retries (counted
    /// in the rate when they come without backoff; first attempts only when they back off).
    /// Catches a storm in its first minute, before shares and amplification peak.
    pub rate_rise: f64,
    pub failure_rise: f64,
    /// A provider storm: over the last 60 s, a provider/model's share of upstream attempts
    /// answered 429/5xx `provider_failure_rise` above its usual share (by the share's one-sided
    /// 95 % Wilson lower bound, and in each 20 s third of the window, so that a bad spell of up
    /// to 30 s is not one), among the other keys too when the key failing most is left out
    /// (or, when one key alone calls it, while that key sends under `rate_rise` times its
    /// usual requests, and it was failing 30 s earlier too, as with backoff) ...
    pub provider_failure_rise: f64,
    /// ... while its upstream attempts per minute, or per request (the gateway's first
    /// attempts less the clients' repeats of an idempotency key), run at `provider_load_rise`
    /// times their usual level: the retries are load.
    pub provider_load_rise: f64,
}

impl Default for RetryStormConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_requests: 20,
            retry_share: 0.25,
            amplification: 3.0,
            critical_amplification: 5.0,
            no_backoff_ms: 250.0,
            rate_rise: 2.0,
            failure_rise: 0.10,
            provider_failure_rise: 0.20,
            provider_load_rise: 1.25,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossRegionConfig {
    pub enabled: bool,
    /// Travel faster than this between two uses is impossible.
    pub max_speed_kmh: f64,
    /// Countries closer than this (neighbours, VPN exits next door) never count as travel.
    pub min_distance_km: f64,
    /// Requests from the far country needed to alert (one stray request is not enough).
    pub min_requests: u64,
    /// Distinct countries in an hour above the key's usual count plus this margin alert.
    pub countries_margin: u64,
    /// Also judge end users (the events' `user`) across all their keys. Turn it on when `user`
    /// names a person calling from their own devices; leave it off when requests reach the
    /// gateway from your servers on the users' behalf (client IPs are then your servers', and a
    /// user served from two regions is not travelling).
    pub per_user: bool,
}

impl Default for CrossRegionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_speed_kmh: 1_000.0,
            min_distance_km: 1_000.0,
            min_requests: 2,
            countries_margin: 3,
            per_user: false,
        }
    }
}

/// Per-entity adjustments; unset fields fall back to the detector's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityOverride {
    /// Detectors switched off for this entity, e.g. `["cross_region"]`.
    pub disabled: Vec<String>,
    /// Replaces `spend_spike.model.min_abs_usd` (the dollar floor) for this entity.
    pub min_abs_usd: Option<f64>,
    pub hourly_budget_usd: Option<f64>,
    pub daily_budget_usd: Option<f64>,
    /// Replaces `spend_spike.min_abs_tokens` for this entity. An entity whose dollar floor or
    /// budget is overridden (a planned batch job) gets no token alerts unless this is set too.
    pub min_abs_tokens: Option<u64>,
    /// Replaces `spend_spike.impact_usd_per_day` (and, scaled alike, the tokens' floor) for this
    /// entity. An entity whose dollar floor or budget is overridden gets no sustained alerts
    /// unless this is set too.
    pub impact_usd_per_day: Option<f64>,
}

impl EntityOverride {
    /// A raised dollar floor or a budget: the entity's spend (a planned batch job, say) is
    /// judged on those terms alone, so token, sustained and shared-baseline rules leave it be.
    pub fn spend_on_own_terms(&self) -> bool {
        self.min_abs_usd.is_some()
            || self.hourly_budget_usd.is_some()
            || self.daily_budget_usd.is_some()
    }
}

/// The four detectors. Their names are what alerts carry (the `detector` label) and what the
/// config says (`[detect.<name>]`, an override's `disabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    SpendSpike,
    LeakedKey,
    RetryStorm,
    CrossRegion,
}

impl Detector {
    pub const ALL: [Detector; 4] = [
        Detector::SpendSpike,
        Detector::LeakedKey,
        Detector::RetryStorm,
        Detector::CrossRegion,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Detector::SpendSpike => "spend_spike",
            Detector::LeakedKey => "leaked_key",
            Detector::RetryStorm => "retry_storm",
            Detector::CrossRegion => "cross_region",
        }
    }

    /// The detector of that name, if any.
    pub fn named(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl std::fmt::Display for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detector and its name compare as the name (alerts and labels carry names).
impl PartialEq<&str> for Detector {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// The detectors' names, in [`Detector::ALL`]'s order.
pub const DETECTORS: [&str; 4] = [
    Detector::SpendSpike.as_str(),
    Detector::LeakedKey.as_str(),
    Detector::RetryStorm.as_str(),
    Detector::CrossRegion.as_str(),
];

impl DetectConfig {
    /// The override for a key, else its project's, else none.
    pub fn override_for(&self, api_key_id: &str, project: &str) -> Option<&EntityOverride> {
        self.keys
            .get(api_key_id)
            .or_else(|| self.projects.get(project))
    }

    pub fn enabled_for(&self, detector: Detector, api_key_id: &str, project: &str) -> bool {
        self.override_for(api_key_id, project)
            .is_none_or(|o| !o.disabled.iter().any(|d| d == detector.as_str()))
    }

    /// (key, message, hint) for every value that makes no sense.
    pub fn problems(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, message: String, hint: &str| {
            if !ok {
                out.push((key.to_owned(), message, hint.to_owned()));
            }
        };
        check(
            (500..=300_000).contains(&self.eval_interval_ms),
            "detect.eval_interval_ms",
            format!(
                "must be between 500 and 300000 (got {})",
                self.eval_interval_ms
            ),
            "milliseconds between evaluations; lower alerts sooner and costs more ClickHouse queries",
        );
        check(
            self.history_hours <= 24 * 31,
            "detect.history_hours",
            format!("must be at most 744 (got {})", self.history_hours),
            "hours of history replayed at start-up; 0 starts the models cold",
        );
        check(
            self.resolve_after_s > 0,
            "detect.resolve_after_s",
            "must be positive".into(),
            "seconds without being flagged before a firing alert resolves",
        );
        check(
            self.shard_count >= 1,
            "detect.shard_count",
            "must be at least 1".into(),
            "the number of detector processes; 1 runs everything in one",
        );
        check(
            self.shard_count == 0 || self.shard_index < self.shard_count,
            "detect.shard_index",
            format!(
                "must be below shard_count (got {} with shard_count {})",
                self.shard_index, self.shard_count
            ),
            "shards are numbered 0 to shard_count - 1",
        );
        check(
            !(self.group.enabled && self.shard_count > 1),
            "detect.group.enabled",
            format!(
                "cannot be combined with shard_count = {}",
                self.shard_count
            ),
            "with group membership the workers share the shards themselves: remove shard_count and shard_index",
        );
        check(
            (1..=1024).contains(&self.group.shards),
            "detect.group.shards",
            format!("must be 1 to 1024 (got {})", self.group.shards),
            "the most detector workers that can share the work; default 6",
        );
        check(
            !self.group.topic.is_empty() && !self.group.group_id.is_empty(),
            "detect.group",
            "topic and group_id must not be empty".into(),
            "defaults: topic = \"tripline.detector.shards\", group_id = \"tripline-detectors\"",
        );
        check(
            self.idle_evict_after_s >= 3600,
            "detect.idle_evict_after_s",
            format!("must be at least 3600 (got {})", self.idle_evict_after_s),
            "seconds an entity may stay unseen before it is forgotten; default 172800 (2 days)",
        );
        check(
            self.max_tracked_keys >= 1_000,
            "detect.max_tracked_keys",
            format!("must be at least 1000 (got {})", self.max_tracked_keys),
            "a backstop on the keys kept in memory (about 1 KB each); default 250000",
        );
        for (field, message, hint) in spend_model_problems(&self.spend_spike.model) {
            check(
                false,
                &format!("detect.spend_spike.model.{field}"),
                message,
                &hint,
            );
        }
        let sp = &self.spend_spike;
        for (key, budget) in [
            ("detect.spend_spike.hourly_budget_usd", sp.hourly_budget_usd),
            ("detect.spend_spike.daily_budget_usd", sp.daily_budget_usd),
        ] {
            if let Some(budget) = budget {
                check(
                    budget.is_finite() && budget > 0.0,
                    key,
                    format!("must be a positive amount of dollars (got {budget})"),
                    "leave it out for no budget",
                );
            }
        }
        if let Some((field, value, expected)) = sp.sustained.invalid() {
            check(
                false,
                &format!("detect.spend_spike.sustained.{field}"),
                format!("{value} is out of range ({expected})"),
                "defaults: threshold 8, slack 0.5, max_step 3, min_ratio 2, drift_windows 20, block_windows 10, dispersion_half_life_blocks 36",
            );
        }
        for (key, floor) in [
            (
                "detect.spend_spike.impact_usd_per_day",
                sp.impact_usd_per_day,
            ),
            (
                "detect.spend_spike.impact_tokens_per_day",
                sp.impact_tokens_per_day,
            ),
        ] {
            check(
                floor.is_finite() && floor >= 0.0,
                key,
                format!("must be zero or more (got {floor})"),
                "extra per day, if the rise went on, that a sustained rise must add to alert",
            );
        }
        let l = &self.leaked_key;
        check(
            l.ip_jump_factor.is_finite() && l.ip_jump_factor >= 1.0,
            "detect.leaked_key.ip_jump_factor",
            format!("must be at least 1 (got {})", l.ip_jump_factor),
            "a multiple of the key's usual distinct IPs per minute",
        );
        check(
            l.scan_min_keys >= 2,
            "detect.leaked_key.scan_min_keys",
            format!("must be at least 2 (got {})", l.scan_min_keys),
            "keys one IP must fail authentication on to count as scanning",
        );
        let r = &self.retry_storm;
        check(
            r.retry_share > 0.0 && r.retry_share <= 1.0,
            "detect.retry_storm.retry_share",
            format!(
                "must be a share above 0 and at most 1 (got {})",
                r.retry_share
            ),
            "0.25 alerts when a quarter of requests are retries",
        );
        check(
            r.amplification >= 1.0 && r.critical_amplification >= r.amplification,
            "detect.retry_storm.amplification",
            format!(
                "must be at least 1 and at most critical_amplification (got {} with critical_amplification {})",
                r.amplification, r.critical_amplification
            ),
            "attempts per successful request; keep amplification <= critical_amplification",
        );
        check(
            r.rate_rise.is_finite() && r.rate_rise >= 1.0,
            "detect.retry_storm.rate_rise",
            format!("must be at least 1 (got {})", r.rate_rise),
            "a multiple of the key's usual requests per minute, e.g. 2.0",
        );
        check(
            r.failure_rise > 0.0 && r.failure_rise <= 1.0,
            "detect.retry_storm.failure_rise",
            format!(
                "must be a share above 0 and at most 1 (got {})",
                r.failure_rise
            ),
            "0.10: 429/5xx answers ten points above the key's usual share",
        );
        check(
            r.provider_failure_rise > 0.0 && r.provider_failure_rise <= 1.0,
            "detect.retry_storm.provider_failure_rise",
            format!(
                "must be a share above 0 and at most 1 (got {})",
                r.provider_failure_rise
            ),
            "0.20: a provider/model's 429/5xx attempts twenty points above its usual share",
        );
        check(
            r.provider_load_rise.is_finite() && r.provider_load_rise >= 1.0,
            "detect.retry_storm.provider_load_rise",
            format!("must be at least 1 (got {})", r.provider_load_rise),
            "a multiple of the provider/model's usual attempts per minute or per request, e.g. 1.25",
        );
        check(
            r.no_backoff_ms.is_finite() && r.no_backoff_ms >= 0.0,
            "detect.retry_storm.no_backoff_ms",
            format!("must not be negative (got {})", r.no_backoff_ms),
            "milliseconds between retries under which a client is taken to have no backoff",
        );
        let c = &self.cross_region;
        check(
            c.max_speed_kmh.is_finite() && c.max_speed_kmh > 0.0,
            "detect.cross_region.max_speed_kmh",
            format!("must be positive (got {})", c.max_speed_kmh),
            "airliners cruise at about 900 km/h",
        );
        check(
            c.min_distance_km.is_finite() && c.min_distance_km >= 0.0,
            "detect.cross_region.min_distance_km",
            format!("must not be negative (got {})", c.min_distance_km),
            "countries closer than this never count as travel",
        );
        for (table, overrides) in [("keys", &self.keys), ("projects", &self.projects)] {
            for (name, o) in overrides {
                let base = format!("detect.{table}.{}", crate::config::quote_key(name));
                for detector in &o.disabled {
                    let choices: Vec<String> = DETECTORS.iter().map(|d| d.to_string()).collect();
                    let hint = match super::diagnose::suggest(detector, &choices) {
                        Some(best) => format!(
                            "did you mean \"{best}\"? One of spend_spike, leaked_key, retry_storm, cross_region"
                        ),
                        None => "one of spend_spike, leaked_key, retry_storm, cross_region".to_owned(),
                    };
                    check(
                        DETECTORS.contains(&detector.as_str()),
                        &format!("{base}.disabled"),
                        format!("{detector:?} is not a detector"),
                        &hint,
                    );
                }
                if let Some(floor) = o.min_abs_usd {
                    check(
                        floor.is_finite() && floor >= 0.0,
                        &format!("{base}.min_abs_usd"),
                        format!("must not be negative (got {floor})"),
                        "the dollar floor for this entity; leave it out to use detect.spend_spike.model.min_abs_usd",
                    );
                }
                for (field, budget) in [
                    ("hourly_budget_usd", o.hourly_budget_usd),
                    ("daily_budget_usd", o.daily_budget_usd),
                ] {
                    if let Some(budget) = budget {
                        check(
                            budget.is_finite() && budget > 0.0,
                            &format!("{base}.{field}"),
                            format!("must be a positive amount of dollars (got {budget})"),
                            "leave it out to use the detector's budget",
                        );
                    }
                }
            }
        }
        out
    }
}

/// Every out-of-range field of the spend model, not only the first: each field is checked on
/// its own against the defaults (the model's `validate` stops at the first).
fn spend_model_problems(model: &SpendModelConfig) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Ok(toml::Value::Table(fields)) = toml::Value::try_from(model) else {
        return out;
    };
    for (field, value) in fields {
        let mut one = toml::map::Map::new();
        one.insert(field.clone(), value);
        let Ok(alone) = toml::Value::Table(one).try_into::<SpendModelConfig>() else {
            continue;
        };
        if let Err(err) = alone.validate() {
            out.push((
                err.field.to_owned(),
                format!("{} is out of range", err.value),
                format!("must be {}", err.expected),
            ));
        }
    }
    if out.is_empty() {
        if let Err(err) = model.validate() {
            out.push((
                err.field.to_owned(),
                format!("{} is out of range", err.value),
                format!("must be {}", err.expected),
            ));
        }
    }
    out
}
