//! The detectors' state and rules, with no IO: per-entity models fed with closed minutes, and
//! each cycle's assessment of the minutes not yet folded (including the one still open, so a
//! monotone quantity such as spend can fire before its minute ends).

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use tripline_core::alert::Severity;
use tripline_core::config::DetectConfig;
use tripline_core::models::ewma::{alpha_from_half_life, Ewma};
use tripline_core::models::geo;
use tripline_core::models::seasonal::hour_of_week;
use tripline_core::models::spend::{SpendModel, SpendParams};

use crate::data::{CycleData, Usage};
use crate::familiar::Familiar;

/// Something a detector flagged this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub detector: &'static str,
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
        detector: &'static str,
        labels: &[(&str, &str)],
        window_start_s: u32,
        window_end_s: u32,
    ) -> Self {
        let mut map: BTreeMap<String, String> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.insert("detector".into(), detector.into());
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
}

/// Everything remembered about one API key.
#[derive(Debug, Clone)]
struct KeyState {
    project: String,
    spend: SpendTrack,
    familiar: Familiar,
    /// Distinct client IPs per active minute.
    ips: Ewma,
    /// The last country the key was used from, and when.
    last_country: Option<(String, i64)>,
    /// Distinct countries per active minute.
    countries: Ewma,
}

/// Spend excused from the shared baselines, by (minute, project) and by minute.
#[derive(Default)]
struct Excused<'a> {
    project: HashMap<(u32, &'a str), f64>,
    overall: HashMap<u32, f64>,
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
    keys: HashMap<String, KeyState>,
    projects: HashMap<String, SpendTrack>,
    overall: Option<SpendTrack>,
    ip_alpha: f64,
    /// Minutes before this (epoch seconds) are folded into the models.
    pub folded_through: u32,
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
            keys: HashMap::new(),
            projects: HashMap::new(),
            overall: None,
            ip_alpha: alpha_from_half_life(60.0),
            folded_through: 0,
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

    /// Assesses every minute from `folded_through` up to `now_s`, returns what is flagged, and
    /// folds the minutes that are closed (ended more than the allowed lateness ago).
    /// With `quiet`, state is updated but nothing is flagged (history replay at start-up).
    pub fn cycle(&mut self, data: &CycleData, now_s: u32, quiet: bool) -> Vec<Candidate> {
        // Minute m is closed once m + 60 s + lateness has passed: starts below this are closed.
        let closed_before =
            (now_s.saturating_sub(self.config.allowed_lateness_s as u32) / MINUTE) * MINUTE;
        let mut out = Vec::new();
        if !quiet {
            if self.config.spend_spike.enabled {
                self.assess_spend(data, now_s, &mut out);
            }
            if self.config.leaked_key.enabled {
                self.assess_leaks(data, &mut out);
            }
            if self.config.retry_storm.enabled {
                self.assess_retries(data, &mut out);
            }
            if self.config.cross_region.enabled {
                self.assess_travel(data, &mut out);
            }
        }
        self.fold(data, closed_before);
        out
    }

    fn key_enabled(&self, detector: &str, key: &str, project: &str) -> bool {
        self.config.enabled_for(detector, key, project)
    }

    fn params_for(&self, key: &str, project: &str) -> SpendParams {
        let mut params = self.spend_params.clone();
        if let Some(floor) = self
            .config
            .override_for(key, project)
            .and_then(|o| o.min_abs_usd)
        {
            params.config.min_abs_usd = floor;
        }
        params
    }

    fn assess_spend(&self, data: &CycleData, now_s: u32, out: &mut Vec<Candidate>) {
        let fraction =
            |minute: u32| (f64::from(now_s.saturating_sub(minute)) / 60.0).clamp(0.05, 1.0);
        for row in data.keys.iter().filter(|r| r.minute >= self.folded_through) {
            let Some(state) = self.keys.get(&row.api_key_id) else {
                continue;
            };
            if !self.key_enabled("spend_spike", &row.api_key_id, &row.project) {
                continue;
            }
            let params = self.params_for(&row.api_key_id, &row.project);
            let how = hour_of_week(i64::from(row.minute) * 1000);
            let a = state
                .spend
                .model
                .assess(&params, row.cost_usd, fraction(row.minute), how);
            if a.breach {
                let mut c = Candidate::new(
                    "spend_spike",
                    &[("api_key_id", &row.api_key_id), ("project", &row.project)],
                    row.minute,
                    row.minute + MINUTE,
                );
                c.severity = if row.cost_usd > a.expected * 10.0 + 10.0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                (c.observed, c.expected, c.upper, c.score) =
                    (row.cost_usd, a.expected, a.upper, a.score);
                c.summary = format!(
                    "key {} spent ${:.2} in a minute (expected ${:.2}, upper ${:.2})",
                    row.api_key_id, row.cost_usd, a.expected, a.upper
                );
                c.facts.insert("requests".into(), json!(row.requests));
                out.push(c);
            }
        }
        let shared: [(&str, &Vec<crate::data::SpendMinute>, bool); 2] = [
            (
                "project",
                &data.projects,
                self.config.spend_spike.per_project,
            ),
            ("overall", &data.overall, self.config.spend_spike.overall),
        ];
        let excused = self.excused_spend(data);
        for (kind, rows, enabled) in shared {
            if !enabled {
                continue;
            }
            for row in rows.iter().filter(|r| r.minute >= self.folded_through) {
                let track = if kind == "project" {
                    self.projects.get(&row.entity)
                } else {
                    self.overall.as_ref()
                };
                let Some(track) = track else { continue };
                let params = if kind == "project" {
                    self.params_for("", &row.entity)
                } else {
                    self.spend_params.clone()
                };
                let cost = row.cost_usd
                    - excused.get(
                        row.minute,
                        (kind == "project").then_some(row.entity.as_str()),
                    );
                let a = track.model.assess(
                    &params,
                    cost,
                    fraction(row.minute),
                    hour_of_week(i64::from(row.minute) * 1000),
                );
                if a.breach {
                    let labels: &[(&str, &str)] = if kind == "project" {
                        &[("project", &row.entity)]
                    } else {
                        &[("scope", "overall")]
                    };
                    let mut c =
                        Candidate::new("spend_spike", labels, row.minute, row.minute + MINUTE);
                    (c.observed, c.expected, c.upper, c.score) =
                        (cost, a.expected, a.upper, a.score);
                    c.summary = format!(
                        "{kind} {} spent ${:.2} in a minute (expected ${:.2})",
                        if row.entity.is_empty() {
                            "all keys"
                        } else {
                            &row.entity
                        },
                        row.cost_usd,
                        a.expected
                    );
                    out.push(c);
                }
            }
        }
        self.assess_budgets(data, now_s, out);
    }

    /// Spend of keys with their own spend override (a planned batch job, say), per minute and
    /// project: they are judged on their own terms, so their project's and the overall baselines
    /// leave them out. Summed in one pass over the key rows (a pass per project row was
    /// quadratic: projects x keys).
    fn excused_spend<'a>(&self, data: &'a CycleData) -> Excused<'a> {
        let mut excused = Excused::default();
        if self.config.keys.is_empty() {
            return excused;
        }
        for k in &data.keys {
            let own = self.config.keys.get(&k.api_key_id).is_some_and(|o| {
                o.min_abs_usd.is_some()
                    || o.hourly_budget_usd.is_some()
                    || o.daily_budget_usd.is_some()
            });
            if own {
                *excused
                    .project
                    .entry((k.minute, k.project.as_str()))
                    .or_default() += k.cost_usd;
                *excused.overall.entry(k.minute).or_default() += k.cost_usd;
            }
        }
        excused
    }

    fn assess_budgets(&self, data: &CycleData, now_s: u32, out: &mut Vec<Candidate>) {
        let s = &self.config.spend_spike;
        let hour_start = now_s / 3600 * 3600;
        let day_start = now_s / 86_400 * 86_400;
        for b in &data.budgets {
            let o = self.config.override_for(&b.api_key_id, &b.project);
            let hourly = o.and_then(|o| o.hourly_budget_usd).or(s.hourly_budget_usd);
            let daily = o.and_then(|o| o.daily_budget_usd).or(s.daily_budget_usd);
            let labels = [
                ("api_key_id", b.api_key_id.as_str()),
                ("project", b.project.as_str()),
            ];
            if let Some(cap) = hourly.filter(|cap| b.hour_usd > *cap) {
                let mut c = Candidate::new("spend_spike", &labels, hour_start, hour_start + 3600);
                c.severity = Severity::Critical;
                (c.observed, c.expected, c.upper, c.score) = (b.hour_usd, cap, cap, 1.0);
                c.summary = format!(
                    "key {} spent ${:.2} this hour, over its ${cap:.2} hourly budget",
                    b.api_key_id, b.hour_usd
                );
                c.facts.insert("budget".into(), json!("hourly"));
                c.labels.insert("budget".into(), "hourly".into());
                out.push(c);
            }
            if let Some(cap) = daily {
                let remaining_h = f64::from(day_start + 86_400 - now_s) / 3600.0;
                let projected = b.day_usd + b.last_hour_usd * remaining_h;
                if b.day_usd > cap || projected > cap {
                    let over = b.day_usd > cap;
                    let mut c =
                        Candidate::new("spend_spike", &labels, day_start, day_start + 86_400);
                    c.severity = if over {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    (c.observed, c.expected, c.upper, c.score) = (
                        if over { b.day_usd } else { projected },
                        cap,
                        cap,
                        if over { 1.0 } else { 0.9 },
                    );
                    c.summary = if over {
                        format!(
                            "key {} spent ${:.2} today, over its ${cap:.2} daily budget",
                            b.api_key_id, b.day_usd
                        )
                    } else {
                        format!("key {} is on course for ${projected:.2} today, over its ${cap:.2} daily budget", b.api_key_id)
                    };
                    c.labels.insert("budget".into(), "daily".into());
                    c.facts.insert("projected_usd".into(), json!(projected));
                    out.push(c);
                }
            }
        }
    }

    fn assess_leaks(&self, data: &CycleData, out: &mut Vec<Candidate>) {
        let cfg = &self.config.leaked_key;
        // Indexed once: looking rows up per key would be quadratic in the number of keys.
        let ips_by_minute: HashMap<(&str, u32), u64> = data
            .keys
            .iter()
            .map(|k| ((k.api_key_id.as_str(), k.minute), k.distinct_ips))
            .collect();
        // Grouped by hash (a BTreeMap of string keys compares ~17 cache-missing strings per
        // row); the candidates are sorted by (key, minute) below, the order the BTreeMap gave.
        let mut per_key: HashMap<(&str, u32), Vec<&Usage>> =
            HashMap::with_capacity(data.keys.len());
        let mut found: Vec<((&str, u32), Candidate)> = Vec::new();
        for u in data
            .usage
            .iter()
            .filter(|u| u.minute >= self.folded_through)
        {
            per_key
                .entry((&u.api_key_id, u.minute))
                .or_default()
                .push(u);
        }
        for ((key, minute), usage) in per_key {
            let Some(state) = self.keys.get(key) else {
                continue;
            };
            if !self.key_enabled("leaked_key", key, &state.project)
                || state.familiar.minutes < cfg.min_history_minutes
            {
                continue;
            }
            // Weak signals (a new country or network) happen to honest keys that travel or
            // change ISP; strong ones (a hosting network, a model family or client never used)
            // rarely do. A leak shows a strong signal with another, or three kinds at once.
            let mut reasons = Vec::new();
            let mut kinds = [false; 5]; // country, network, hosting, model family, user agent
            let mut new_requests = 0;
            for u in &usage {
                let mut novel = false;
                let mut flag = |kind: usize, reason: String| {
                    kinds[kind] = true;
                    reasons.push(reason);
                    novel = true;
                };
                if cfg.new_country
                    && !u.country.is_empty()
                    && !state.familiar.has_country(&u.country)
                {
                    flag(0, format!("new country {}", u.country));
                }
                if cfg.new_asn && u.asn != 0 && !state.familiar.has_asn(u.asn) {
                    flag(1, format!("new network AS{} {}", u.asn, u.as_org));
                }
                if cfg.hosting_asn
                    && !state.familiar.used_hosting
                    && crate::familiar::is_hosting(&u.as_org)
                {
                    flag(2, format!("hosting network {}", u.as_org));
                }
                if cfg.new_model_family && !state.familiar.has_model(&u.model) {
                    flag(
                        3,
                        format!(
                            "new model family {}",
                            crate::familiar::model_family(&u.model)
                        ),
                    );
                }
                if cfg.new_user_agent
                    && !u.user_agent.is_empty()
                    && !state.familiar.has_user_agent(&u.user_agent)
                {
                    flag(4, format!("new client {}", u.user_agent));
                }
                if novel {
                    new_requests += u.requests;
                }
            }
            reasons.sort();
            reasons.dedup();
            let strong = kinds[2..].iter().filter(|k| **k).count();
            let all = kinds.iter().filter(|k| **k).count();
            let novel_use = (strong >= 1 && all >= 2 && new_requests >= cfg.min_new_requests)
                || (all >= 3 && new_requests >= 1);
            let distinct_ips = ips_by_minute.get(&(key, minute)).copied().unwrap_or(0);
            let usual_ips = state.ips.mean.max(1.0);
            let ip_jump = distinct_ips >= cfg.min_distinct_ips
                && distinct_ips as f64 > usual_ips * cfg.ip_jump_factor;
            if ip_jump {
                reasons.push(format!(
                    "{distinct_ips} distinct IPs (usually {usual_ips:.1})"
                ));
            }
            if !novel_use && !ip_jump {
                continue;
            }
            let mut c = Candidate::new(
                "leaked_key",
                &[("api_key_id", key), ("project", &state.project)],
                minute,
                minute + MINUTE,
            );
            c.severity = if reasons.len() >= 3 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            (c.observed, c.expected, c.upper) = (
                new_requests.max(distinct_ips) as f64,
                0.0,
                cfg.min_new_requests as f64,
            );
            c.score = (reasons.len() as f64 / 4.0).min(1.0);
            c.summary = format!("key {key} used in unfamiliar ways: {}", reasons.join(", "));
            c.facts.insert("reasons".into(), json!(reasons));
            found.push(((key, minute), c));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(found.into_iter().map(|(_, c)| c));
        for scan in &data.scans {
            let minute = (scan.first_ms / 60_000 * 60) as u32;
            let mut c = Candidate::new(
                "leaked_key",
                &[("client_ip", &scan.client_ip)],
                minute,
                (scan.last_ms / 1000) as u32 + 1,
            );
            c.severity = Severity::Critical;
            (c.observed, c.expected, c.upper, c.score) = (
                scan.keys as f64,
                0.0,
                self.config.leaked_key.scan_min_keys as f64,
                1.0,
            );
            c.summary = format!(
                "{} failed authentication on {} different keys ({} requests): key scanning",
                scan.client_ip, scan.keys, scan.requests
            );
            c.labels.insert("pattern".into(), "key_scanning".into());
            out.push(c);
        }
    }

    fn assess_retries(&self, data: &CycleData, out: &mut Vec<Candidate>) {
        let cfg = &self.config.retry_storm;
        let retries_by_minute: HashMap<(&str, u32), &crate::data::KeyRetries> = data
            .retries
            .iter()
            .map(|r| ((r.api_key_id.as_str(), r.minute), r))
            .collect();
        for row in data
            .keys
            .iter()
            .filter(|r| r.minute >= self.folded_through && r.requests >= cfg.min_requests)
        {
            if !self.key_enabled("retry_storm", &row.api_key_id, &row.project) {
                continue;
            }
            let retries = retries_by_minute.get(&(row.api_key_id.as_str(), row.minute));
            let successes = row.requests.saturating_sub(row.failures).max(1);
            let attempts = retries.map_or(0, |r| r.provider_attempts).max(row.requests);
            let amplification = attempts as f64 / successes as f64;
            let share = row.retries as f64 / row.requests as f64;
            let fast = retries.map_or(0, |r| r.fast_chains);
            let chains = retries.map_or(0, |r| r.chains);
            if share < cfg.retry_share && amplification < cfg.amplification {
                continue;
            }
            let no_backoff = chains > 0 && fast * 2 >= chains;
            let mut c = Candidate::new(
                "retry_storm",
                &[("api_key_id", &row.api_key_id), ("project", &row.project)],
                row.minute,
                row.minute + MINUTE,
            );
            c.severity = if amplification >= cfg.critical_amplification
                || (no_backoff && amplification >= cfg.amplification)
            {
                Severity::Critical
            } else {
                Severity::Warning
            };
            (c.observed, c.expected, c.upper) = (amplification, 1.0, cfg.amplification);
            c.score = (1.0 - 1.0 / amplification.max(1.0)).max(share).min(1.0);
            c.summary =
                format!(
                "key {}: {:.1} attempts per successful request, {:.0} % of requests are retries{}",
                row.api_key_id,
                amplification,
                share * 100.0,
                if no_backoff { ", retried without backoff" } else { "" }
            );
            c.facts.insert("amplification".into(), json!(amplification));
            c.facts.insert("retry_share".into(), json!(share));
            c.facts.insert("retry_chains".into(), json!(chains));
            c.facts.insert("chains_without_backoff".into(), json!(fast));
            out.push(c);
        }
        if !data.providers.is_empty() {
            for p in data
                .providers
                .iter()
                .filter(|p| p.minute >= self.folded_through && p.attempts >= cfg.min_requests * 2)
            {
                let amplification = p.attempts as f64 / p.successes.max(1) as f64;
                if amplification < cfg.amplification {
                    continue;
                }
                let mut c = Candidate::new(
                    "retry_storm",
                    &[("provider", &p.provider), ("model", &p.model)],
                    p.minute,
                    p.minute + MINUTE,
                );
                c.severity = if amplification >= cfg.critical_amplification {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                (c.observed, c.expected, c.upper) = (amplification, 1.0, cfg.amplification);
                c.score = (1.0 - 1.0 / amplification).min(1.0);
                c.summary = format!(
                    "{}/{}: {:.1} upstream attempts per success",
                    p.provider, p.model, amplification
                );
                c.facts.insert("amplification".into(), json!(amplification));
                out.push(c);
            }
        }
    }

    fn assess_travel(&self, data: &CycleData, out: &mut Vec<Candidate>) {
        let cfg = &self.config.cross_region;
        // Per key: (country, first_ms, last_ms, requests) over the unfolded minutes.
        // A key has few countries: a small vector per key, sorted by country below, and the
        // candidates sorted by key at the end (the order the nested BTreeMaps gave).
        type Spans<'a> = Vec<(&'a str, (i64, i64, u64))>;
        let mut uses: HashMap<&str, Spans> = HashMap::with_capacity(data.keys.len());
        for u in data
            .usage
            .iter()
            .filter(|u| u.minute >= self.folded_through && !u.country.is_empty())
        {
            let list = uses.entry(&u.api_key_id).or_default();
            let i = match list.iter().position(|(c, _)| *c == u.country) {
                Some(i) => i,
                None => {
                    list.push((&u.country, (i64::MAX, i64::MIN, 0)));
                    list.len() - 1
                }
            };
            let entry = &mut list[i].1;
            entry.0 = entry.0.min(u.first_ms);
            entry.1 = entry.1.max(u.last_ms);
            entry.2 += u.requests;
        }
        let mut found: Vec<(&str, Candidate)> = Vec::new();
        for (key, mut countries) in uses {
            countries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let Some(state) = self.keys.get(key) else {
                continue;
            };
            if !self.key_enabled("cross_region", key, &state.project) {
                continue;
            }
            let mut spans: Vec<(&str, i64, i64, u64)> = countries
                .iter()
                .map(|(c, (a, b, n))| (*c, *a, *b, *n))
                .collect();
            if let Some((country, at)) = &state.last_country {
                spans.push((country.as_str(), *at, *at, u64::MAX));
            }
            let mut worst: Option<(f64, f64, &str, &str, f64)> = None; // speed, km, from, to, hours
            for a in &spans {
                for b in &spans {
                    if a.0 == b.0 || b.3 < cfg.min_requests || b.1 < a.1 {
                        continue;
                    }
                    let Some(km) = geo::country_distance_km(a.0, b.0) else {
                        continue;
                    };
                    if km < cfg.min_distance_km {
                        continue;
                    }
                    let gap_h = ((b.1 - a.2) as f64 / 3_600_000.0).max(0.0);
                    let speed = if gap_h <= 0.0 {
                        f64::INFINITY
                    } else {
                        km / gap_h
                    };
                    if speed > cfg.max_speed_kmh && worst.is_none_or(|w| speed > w.0) {
                        worst = Some((speed, km, a.0, b.0, gap_h));
                    }
                }
            }
            let many = countries.len() as u64;
            let usual = state.countries.mean.max(1.0).ceil() as u64;
            if worst.is_none() && many >= usual + cfg.countries_margin {
                let first = countries.iter().map(|v| v.1 .0).min().unwrap_or(0);
                let last = countries.iter().map(|v| v.1 .1).max().unwrap_or(first);
                let labels = [("api_key_id", key), ("project", state.project.as_str())];
                let mut c = Candidate::new(
                    "cross_region",
                    &labels,
                    (first / 1000) as u32,
                    (last / 1000) as u32 + 1,
                );
                c.observed = many as f64;
                c.expected = state.countries.mean;
                c.upper = (usual + cfg.countries_margin) as f64;
                c.score = 0.9;
                let list: Vec<&str> = countries.iter().map(|v| v.0).collect();
                c.summary = format!(
                    "key {key} used from {many} countries at once ({}), usually {usual}",
                    list.join(", ")
                );
                c.facts.insert("countries".into(), json!(list));
                found.push((key, c));
                continue;
            }
            let Some((speed, km, from, to, hours)) = worst else {
                continue;
            };
            let first = spans.iter().map(|s| s.1).min().unwrap_or(0);
            let last = spans
                .iter()
                .filter(|s| s.3 != u64::MAX)
                .map(|s| s.2)
                .max()
                .unwrap_or(first);
            let mut c = Candidate::new(
                "cross_region",
                &[("api_key_id", key), ("project", &state.project)],
                (first / 1000) as u32,
                (last / 1000) as u32 + 1,
            );
            c.severity = Severity::Critical;
            let shown_speed = if speed.is_finite() { speed } else { km * 60.0 };
            (c.observed, c.expected, c.upper, c.score) = (shown_speed, 0.0, cfg.max_speed_kmh, 1.0);
            c.summary = format!("key {key} used from {from} and {to} ({km:.0} km apart) within {:.0} minutes: impossible travel", hours * 60.0);
            c.facts.insert("from".into(), json!(from));
            c.facts.insert("to".into(), json!(to));
            c.facts.insert("distance_km".into(), json!(km.round()));
            c.facts.insert(
                "implied_speed_kmh".into(),
                if speed.is_finite() {
                    json!(speed.round())
                } else {
                    json!("simultaneous")
                },
            );
            found.push((key, c));
        }
        found.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(found.into_iter().map(|(_, c)| c));
    }

    /// Folds every closed minute (< `closed_before`) not folded yet into the models.
    fn fold(&mut self, data: &CycleData, closed_before: u32) {
        if closed_before <= self.folded_through {
            return;
        }
        let from = self.folded_through;
        let closed = |minute: u32| minute >= from && minute < closed_before;
        let params = self.spend_params.clone();

        // Keys: spend per minute, zero-filled for minutes without traffic.
        // Per key, its closed minutes in order (one in a live cycle, up to 60 in a replay
        // chunk): a small sorted vector rather than a BTreeMap allocated per key.
        type Minutes<'a> = Vec<(u32, (f64, u64, &'a str))>;
        let mut spend: HashMap<&str, Minutes> = HashMap::with_capacity(data.keys.len());
        for row in data.keys.iter().filter(|r| closed(r.minute)) {
            spend
                .entry(&row.api_key_id)
                .or_default()
                .push((row.minute, (row.cost_usd, row.distinct_ips, &row.project)));
        }
        for minutes in spend.values_mut() {
            if minutes.len() > 1 {
                // Stable, then the last row of a minute wins, as a map insert would have it.
                minutes.sort_by_key(|m| m.0);
                minutes.reverse();
                minutes.dedup_by_key(|m| m.0);
                minutes.reverse();
            }
        }
        for (key, minutes) in &spend {
            if !self.keys.contains_key(*key) {
                let first = minutes.first().expect("non-empty").0;
                let project = minutes.first().map_or("", |v| v.1 .2).to_owned();
                self.keys.insert(
                    (*key).to_owned(),
                    KeyState {
                        project,
                        spend: SpendTrack {
                            model: SpendModel::new(&params),
                            last_folded: first,
                        },
                        familiar: Familiar::default(),
                        ips: Ewma::default(),
                        last_country: None,
                        countries: Ewma::default(),
                    },
                );
            }
        }
        let ip_alpha = self.ip_alpha;
        for (key, state) in self.keys.iter_mut() {
            let minutes = spend.get(key.as_str());
            if let Some((_, (_, _, project))) = minutes.and_then(|m| m.last()) {
                if !project.is_empty() && state.project != *project {
                    state.project = (*project).to_owned();
                }
            }
            let mut minute = state.spend.last_folded.max(from);
            while minute < closed_before {
                let (cost, ips) = minutes
                    .and_then(|m| {
                        m.binary_search_by_key(&minute, |v| v.0)
                            .ok()
                            .map(|i| &m[i].1)
                    })
                    .map_or((0.0, 0), |v| (v.0, v.1));
                state
                    .spend
                    .model
                    .update(&params, cost, hour_of_week(i64::from(minute) * 1000));
                if ips > 0 {
                    state.ips.update(ips as f64, ip_alpha);
                    state.familiar.minutes += 1;
                }
                minute += MINUTE;
            }
            state.spend.last_folded = closed_before;
        }
        let mut per_minute: HashMap<(&str, u32), Vec<&str>> = HashMap::new();
        for u in data
            .usage
            .iter()
            .filter(|u| closed(u.minute) && !u.country.is_empty())
        {
            let list = per_minute.entry((&u.api_key_id, u.minute)).or_default();
            if !list.contains(&u.country.as_str()) {
                list.push(&u.country);
            }
        }
        for ((key, _), list) in per_minute {
            if let Some(state) = self.keys.get_mut(key) {
                state.countries.update(list.len() as f64, ip_alpha);
            }
        }
        for u in data.usage.iter().filter(|u| closed(u.minute)) {
            if let Some(state) = self.keys.get_mut(&u.api_key_id) {
                state.familiar.learn(u);
                // No new String per row: the country rarely changes.
                if !u.country.is_empty() {
                    match &mut state.last_country {
                        Some((country, at)) if u.last_ms >= *at => {
                            if *country != u.country {
                                country.clone_from(&u.country);
                            }
                            *at = u.last_ms;
                        }
                        Some(_) => {}
                        None => state.last_country = Some((u.country.clone(), u.last_ms)),
                    }
                }
            }
        }
        let excused = self.excused_spend(data);
        for (rows, is_project) in [(&data.projects, true), (&data.overall, false)] {
            let mut per: HashMap<&str, BTreeMap<u32, f64>> = HashMap::new();
            for r in rows.iter().filter(|r| closed(r.minute)) {
                let excused = excused.get(r.minute, is_project.then_some(r.entity.as_str()));
                per.entry(&r.entity)
                    .or_default()
                    .insert(r.minute, r.cost_usd - excused);
            }
            for (entity, minutes) in per {
                let track = if is_project {
                    self.projects
                        .entry(entity.to_owned())
                        .or_insert_with(|| SpendTrack {
                            model: SpendModel::new(&params),
                            last_folded: *minutes.keys().next().expect("non-empty"),
                        })
                } else {
                    self.overall.get_or_insert_with(|| SpendTrack {
                        model: SpendModel::new(&params),
                        last_folded: *minutes.keys().next().expect("non-empty"),
                    })
                };
                let mut minute = track.last_folded.max(from);
                while minute < closed_before {
                    let cost = minutes.get(&minute).copied().unwrap_or(0.0);
                    track
                        .model
                        .update(&params, cost, hour_of_week(i64::from(minute) * 1000));
                    minute += MINUTE;
                }
                track.last_folded = closed_before;
            }
        }
        self.folded_through = closed_before;
    }
}

#[cfg(test)]
mod tests;
