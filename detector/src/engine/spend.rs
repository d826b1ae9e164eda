//! spend_spike: per-minute spend of each key, project and all keys against its baseline, and
//! the hourly and daily budgets.

use super::*;

impl Engine {
    pub(super) fn assess_spend(
        &self,
        data: &CycleData,
        known: &[Option<&KeyState>],
        now_s: u32,
        crowd: &sustained::Crowd,
        out: &mut Vec<Candidate>,
    ) {
        let fraction =
            |minute: u32| (f64::from(now_s.saturating_sub(minute)) / 60.0).clamp(0.05, 1.0);
        // Keys the per-minute rules flagged (spend, tokens): the sustained rule adds no second
        // candidate for them.
        let mut fired: FxMap<&str, (bool, bool)> = FxMap::default();
        for (row, state) in Engine::unfolded(data, known, self.folded_through) {
            if !self.key_enabled(Detector::SpendSpike, &row.api_key_id, &row.project) {
                continue;
            }
            if let Some(c) = self.assess_tokens(row, state, crowd) {
                fired.entry(&row.api_key_id).or_default().1 = true;
                out.push(c);
            }
            let params = self.params_for(&row.api_key_id, &row.project);
            let how = hour_of_week(i64::from(row.minute) * 1000);
            let a = state
                .spend
                .model
                .assess(&params, row.cost_usd, fraction(row.minute), how);
            if a.breach {
                let mut c = Candidate::new(
                    Detector::SpendSpike,
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
                fired.entry(&row.api_key_id).or_default().0 = true;
                out.push(c);
            }
        }
        self.assess_sustained(data, known, now_s, crowd, &fired, out);
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
                    Cow::Borrowed(&self.spend_params)
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
                    let mut c = Candidate::new(
                        Detector::SpendSpike,
                        labels,
                        row.minute,
                        row.minute + MINUTE,
                    );
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

    /// Tokens of a key's minute (so far) against its usual tokens per active minute: above it by
    /// `min_abs_tokens`, by six spreads, and at least twice it. Tokens only grow within a
    /// minute, so an open minute already past the bound has breached it. The usual and its
    /// spread are scaled by how busy the other keys are ([`sustained::Crowd`]; none when the
    /// sustained rule is off), as the sustained rule's are: a daily peak raises a big key's
    /// tokens with everyone's (DEV seed 12: key-0006 at 3.5x its usual cleared six spreads in
    /// a peak that had raised the others about 1.8x).
    fn assess_tokens(
        &self,
        row: &crate::data::KeyMinute,
        state: &KeyState,
        crowd: &sustained::Crowd,
    ) -> Option<Candidate> {
        const SPREADS: f64 = 6.0;
        const MIN_HISTORY_MINUTES: u64 = 30;
        let floor = match self.config.override_for(&row.api_key_id, &row.project) {
            Some(o) if o.min_abs_tokens.is_some() => o.min_abs_tokens,
            // A raised dollar floor or budget (a planned batch) speaks for its tokens too.
            Some(o) if o.spend_on_own_terms() => None,
            _ => Some(self.config.spend_spike.min_abs_tokens),
        }
        .filter(|f| *f > 0)?;
        let usual = &state.tokens;
        if usual.n < MIN_HISTORY_MINUTES {
            return None;
        }
        let observed = row.tokens as f64;
        let upper_at = |busy: f64| {
            let (mean, spread) = (usual.mean * busy, usual.std() * busy);
            (mean + floor as f64)
                .max(mean + SPREADS * spread)
                .max(2.0 * mean)
        };
        // The crowd is never below 1: most minutes are under the bound before it is read.
        if observed <= upper_at(1.0) {
            return None;
        }
        // The others' rise that the key's usual (an hour-long average, no daily rhythm) has
        // not learnt: against their usual for the hour, and against their last half hour to an
        // hour, whichever is less (a learnt daily peak reads 1 on the first, an hour-old one on
        // the second).
        let crowding = crowd.for_key(row, state, &self.spend_params);
        let busy = crowding.usual.min(crowding.reference).max(1.0);
        let upper = upper_at(busy);
        if observed <= upper {
            tracing::debug!(
                key = %row.api_key_id,
                minute = row.minute,
                tokens = row.tokens,
                upper_alone = upper_at(1.0),
                busy,
                "spend_spike tokens: over the key's bound alone, within it with the crowd's rise"
            );
            return None;
        }
        let mut c = Candidate::new(
            Detector::SpendSpike,
            &[
                ("api_key_id", &row.api_key_id),
                ("project", &row.project),
                ("measure", "tokens"),
            ],
            row.minute,
            row.minute + MINUTE,
        );
        (c.observed, c.expected, c.upper) = (observed, usual.mean, upper);
        c.score = (1.0 - upper / observed).clamp(0.0, 1.0);
        c.summary = format!(
            "key {} used {} tokens in a minute (usually {:.0}, upper {:.0}) for ${:.2}",
            row.api_key_id, row.tokens, usual.mean, upper, row.cost_usd
        );
        if busy > 1.0 {
            c.summary
                .push_str(&format!(", the other keys at {busy:.1}x their usual"));
            c.facts.insert("crowd".into(), json!(busy));
        }
        c.facts.insert("tokens".into(), json!(row.tokens));
        c.facts.insert("requests".into(), json!(row.requests));
        Some(c)
    }

    /// Spend of keys with their own spend override (a planned batch job, say), per minute and
    /// project: they are judged on their own terms, so their project's and the overall baselines
    /// leave them out. Summed in one pass over the key rows (a pass per project row was
    /// quadratic: projects x keys).
    pub(super) fn excused_spend<'a>(&self, data: &'a CycleData) -> Excused<'a> {
        let mut excused = Excused::default();
        if self.config.keys.is_empty() {
            return excused;
        }
        for k in &data.keys {
            let own = self
                .config
                .keys
                .get(&k.api_key_id)
                .is_some_and(|o| o.spend_on_own_terms());
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
        // The hour and day the sums belong to (a replay judges a minute when it has ended,
        // which at 23:59 is already the next day).
        let hour_start = data.budget_minute / 3600 * 3600;
        let day_start = data.budget_minute / 86_400 * 86_400;
        let now_s = now_s.clamp(data.budget_minute, day_start + 86_400);
        for b in &data.budgets {
            let o = self.config.override_for(&b.api_key_id, &b.project);
            let hourly = o.and_then(|o| o.hourly_budget_usd).or(s.hourly_budget_usd);
            let daily = o.and_then(|o| o.daily_budget_usd).or(s.daily_budget_usd);
            let labels = [
                ("api_key_id", b.api_key_id.as_str()),
                ("project", b.project.as_str()),
            ];
            if let Some(cap) = hourly.filter(|cap| b.hour_usd > *cap) {
                let mut c =
                    Candidate::new(Detector::SpendSpike, &labels, hour_start, hour_start + 3600);
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
                    let mut c = Candidate::new(
                        Detector::SpendSpike,
                        &labels,
                        day_start,
                        day_start + 86_400,
                    );
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
}
