//! leaked_key: a key used in ways it never was (weighed weak and strong signals), a jump in
//! distinct client IPs, and one IP failing authentication on many keys.

use super::*;

impl Engine {
    pub(super) fn assess_leaks(&self, data: &CycleData, ids: &CycleIds, out: &mut Vec<Candidate>) {
        let cfg = &self.config.leaked_key;
        // Indexed once: looking rows up per key would be quadratic in the number of keys.
        let ips_by_minute: FxMap<(KeyId, u32), u64> = data
            .keys
            .iter()
            .zip(&ids.keys)
            .map(|(k, id)| ((*id, k.minute), k.distinct_ips))
            .collect();
        // Grouped by digest (a BTreeMap of string keys compares ~17 cache-missing strings per
        // row); the candidates are sorted by (key, minute) below, the order the BTreeMap gave.
        let mut per_key: FxMap<(KeyId, u32), smallvec::SmallVec<[&Usage; 4]>> =
            FxMap::with_capacity_and_hasher(data.keys.len(), Default::default());
        let mut found: Vec<((&str, u32), Candidate)> = Vec::new();
        for (u, id) in data.usage.iter().zip(&ids.usage) {
            if u.minute >= self.folded_through {
                per_key.entry((*id, u.minute)).or_default().push(u);
            }
        }
        for ((id, minute), usage) in per_key {
            let Some(state) = self.keys.get(&id) else {
                continue;
            };
            let key = usage[0].api_key_id.as_str();
            if !self.key_enabled(Detector::LeakedKey, key, &state.project)
                || state.familiar.minutes < cfg.min_history_minutes
            {
                continue;
            }
            // Weak signals (a new country or network) happen to honest keys that travel or
            // change ISP; strong ones (a hosting network, a model family or client never used)
            // rarely do. A leak shows a strong signal with another, or three kinds at once.
            let mut reasons = Vec::new();
            // country, network, idle hour (weak); hosting, model family, user agent (strong)
            let mut kinds = [false; 6];
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
                if cfg.idle_hours && state.familiar.idle_at(minute) {
                    flag(
                        2,
                        format!(
                            "active at {:02}:00 UTC, an hour it is normally idle",
                            minute / 3600 % 24
                        ),
                    );
                }
                if cfg.hosting_asn
                    && state.familiar.may_be_new_hosting(u.asn)
                    && crate::familiar::is_hosting(&u.as_org)
                {
                    flag(3, format!("hosting network {}", u.as_org));
                }
                if cfg.new_model_family && !state.familiar.has_model(&u.model) {
                    flag(
                        4,
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
                    flag(5, format!("new client {}", u.user_agent));
                }
                if novel {
                    new_requests += u.requests;
                }
            }
            reasons.sort();
            reasons.dedup();
            let strong = kinds[3..].iter().filter(|k| **k).count();
            let all = kinds.iter().filter(|k| **k).count();
            let novel_use = (strong >= 1 && all >= 2 && new_requests >= cfg.min_new_requests)
                || (all >= 3 && new_requests >= 1);
            let distinct_ips = ips_by_minute.get(&(id, minute)).copied().unwrap_or(0);
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
                Detector::LeakedKey,
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
                Detector::LeakedKey,
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
}
