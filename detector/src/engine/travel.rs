//! cross_region: impossible travel between countries, and many countries at once.

use super::*;

impl Engine {
    pub(super) fn assess_travel(&self, data: &CycleData, out: &mut Vec<Candidate>) {
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
}
