//! cross_region: impossible travel between countries, per key and per end user, and many
//! countries at once per key.
//!
//! Two far-apart countries used within less time than travel allows fire, unless the entity is
//! known to be in both at once: a pair seen together for `PAIR_FAMILIAR_MINUTES` closed minutes
//! (a service deployed in two regions, a user whose requests reach two of the app's servers)
//! is no longer news. Until then it keeps firing, so a thief using a key beside its owner is
//! flagged for the first half hour, not once.
//!
//! A far country needs `min_requests` requests before it counts (one stray request is not
//! enough). They are counted over the minutes not yet folded and the strays of the last
//! `STRAY_MEMORY_MS` before them, so that a thief calling once a minute is judged at its
//! second request, wherever the minutes and the allowed lateness cut its calls, and not only
//! if two of them happen to fall within the same 30-90 s of unfolded time.

use tripline_core::config::CrossRegionConfig;

use super::*;
use crate::data::UserUse;

/// Closed minutes two countries must be seen together before their pair stops alerting.
const PAIR_FAMILIAR_MINUTES: u16 = 30;
/// Pairs remembered per entity.
const MAX_PAIRS: usize = 8;
/// Active minutes of a user before its moves are judged (its usual places are unknown before).
pub(super) const USER_MIN_HISTORY_MINUTES: u32 = 10;
/// How long a country's requests too few to count on their own (fewer than `min_requests` in
/// their minute) are remembered, to add up with its next ones.
const STRAY_MEMORY_MS: i64 = 180_000;
/// Strays remembered per entity (one per country and minute, the oldest dropped first).
const MAX_STRAYS: usize = 8;
/// No move is impossible after this long (half the Earth's circumference at 1,000 km/h is
/// 20 hours): a user not seen for longer is forgotten.
const USER_MEMORY_S: i64 = 24 * 3600;

/// Where an entity was, and which far-apart countries it is known to use at once.
#[derive(Debug, Clone, Default)]
pub(super) struct Whereabouts {
    /// The last country used, and when (ms).
    pub last: Option<(String, i64)>,
    /// Country pairs (codes in order) seen together, with the closed minutes they were seen in.
    pairs: Vec<([u8; 4], u16)>,
    /// Stays of folded minutes with fewer than `min_requests` requests, from the last
    /// `STRAY_MEMORY_MS`: empty for an entity that uses each of its countries more than once a
    /// minute.
    strays: Vec<Stray>,
}

/// A country used too little in a folded minute to count on its own.
#[derive(Debug, Clone, Copy)]
struct Stray {
    country: [u8; 2],
    first_ms: i64,
    last_ms: i64,
    requests: u64,
}

impl Stray {
    fn stay(&self) -> Option<Stay<'_>> {
        Some(Stay {
            country: std::str::from_utf8(&self.country).ok()?,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            requests: self.requests,
        })
    }
}

impl Whereabouts {
    fn pair_key(a: &str, b: &str) -> Option<[u8; 4]> {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != 2 || b.len() != 2 {
            return None;
        }
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        Some([x[0], x[1], y[0], y[1]])
    }

    fn familiar_pair(&self, a: &str, b: &str) -> bool {
        Self::pair_key(a, b).is_some_and(|k| {
            self.pairs
                .iter()
                .any(|(p, n)| *p == k && *n >= PAIR_FAMILIAR_MINUTES)
        })
    }

    fn note_pair(&mut self, k: [u8; 4]) {
        if let Some(entry) = self.pairs.iter_mut().find(|(p, _)| *p == k) {
            entry.1 = entry.1.saturating_add(1);
        } else if self.pairs.len() < MAX_PAIRS {
            self.pairs.push((k, 1));
        } else if let Some(rarest) = self
            .pairs
            .iter_mut()
            .filter(|(_, n)| *n < PAIR_FAMILIAR_MINUTES)
            .min_by_key(|(_, n)| *n)
        {
            // Full: a pair still being learned makes room, so that noise (a VPN hop, a thief)
            // cannot keep a real second region from ever becoming familiar.
            *rarest = (k, 1);
        }
    }

    /// `stays` with the strays remembered from before them (up to `STRAY_MEMORY_MS` before the
    /// latest of them) added in, one per country.
    fn with_strays<'a>(&'a self, stays: &[Stay<'a>]) -> Stays<'a> {
        let mut all: Stays = stays.iter().cloned().collect();
        let Some(latest) = stays.iter().map(|s| s.last_ms).max() else {
            return all;
        };
        for stray in &self.strays {
            if let Some(s) = stray
                .stay()
                .filter(|s| s.last_ms >= latest - STRAY_MEMORY_MS)
            {
                add_stay(&mut all, s.country, s.first_ms, s.last_ms, s.requests);
            }
        }
        all
    }

    /// Folds one closed minute of stays: learns the impossible pairs (a country counted with its
    /// recent strays, in a minute it was used in), moves the last place, remembers the strays.
    pub(super) fn fold_minute(&mut self, stays: &[Stay], cfg: &CrossRegionConfig) {
        if stays.is_empty() {
            return;
        }
        let mut seen: Vec<[u8; 4]> = Vec::new();
        let all = self.with_strays(stays);
        for m in moves(&all, self.last.as_ref(), cfg) {
            let this_minute = stays.iter().any(|s| s.country == m.to);
            if let Some(k) =
                Self::pair_key(m.from, m.to).filter(|k| this_minute && !seen.contains(k))
            {
                seen.push(k);
            }
        }
        drop(all);
        for k in seen {
            self.note_pair(k);
        }
        self.remember_strays(stays, cfg);
        if let Some(latest) = stays.iter().max_by_key(|s| s.last_ms) {
            match &mut self.last {
                Some((country, at)) if latest.last_ms >= *at => {
                    if country != latest.country {
                        country.clear();
                        country.push_str(latest.country);
                    }
                    *at = latest.last_ms;
                }
                Some(_) => {}
                None => self.last = Some((latest.country.to_owned(), latest.last_ms)),
            }
        }
    }

    /// Forgets the strays older than `STRAY_MEMORY_MS` before this minute's latest use, and
    /// remembers this minute's countries used too little to count on their own.
    fn remember_strays(&mut self, stays: &[Stay], cfg: &CrossRegionConfig) {
        let latest = stays.iter().map(|s| s.last_ms).max().unwrap_or(i64::MIN);
        self.strays
            .retain(|s| s.last_ms >= latest.saturating_sub(STRAY_MEMORY_MS));
        for s in stays.iter().filter(|s| s.requests < cfg.min_requests) {
            let &[a, b] = s.country.as_bytes() else {
                continue;
            };
            if self.strays.len() >= MAX_STRAYS {
                self.strays.remove(0);
            }
            self.strays.push(Stray {
                country: [a, b],
                first_ms: s.first_ms,
                last_ms: s.last_ms,
                requests: s.requests,
            });
        }
    }

    /// The fastest impossible move among `stays` (with the recent strays) that is not a
    /// familiar pair.
    fn news<'a>(&'a self, stays: &[Stay<'a>], cfg: &'a CrossRegionConfig) -> Option<Move<'a>> {
        let all = self.with_strays(stays);
        moves(&all, self.last.as_ref(), cfg)
            .filter(|m| !self.familiar_pair(m.from, m.to))
            .max_by(|a, b| a.speed_kmh.total_cmp(&b.speed_kmh))
    }
}

/// Use from one country in the minutes looked at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stay<'a> {
    pub country: &'a str,
    pub first_ms: i64,
    pub last_ms: i64,
    pub requests: u64,
}

/// An entity's stays, inline up to two countries (most keys, most minutes: one).
type Stays<'a> = smallvec::SmallVec<[Stay<'a>; 2]>;

/// Adds a row to the stays of an entity (one per country).
fn add_stay<'a>(stays: &mut Stays<'a>, country: &'a str, first: i64, last: i64, n: u64) {
    match stays.iter_mut().find(|s| s.country == country) {
        Some(s) => {
            s.first_ms = s.first_ms.min(first);
            s.last_ms = s.last_ms.max(last);
            s.requests += n;
        }
        None => stays.push(Stay {
            country,
            first_ms: first,
            last_ms: last,
            requests: n,
        }),
    }
}

/// A move between two countries faster than travel allows.
#[derive(Debug, Clone, Copy)]
struct Move<'a> {
    from: &'a str,
    to: &'a str,
    km: f64,
    hours: f64,
    /// Infinite when the two were used at the same time.
    speed_kmh: f64,
}

/// Every impossible move into one of `stays` (from another stay, or from the last known place),
/// the destination, and a source other than the last known place, having at least
/// `min_requests` requests.
fn moves<'s, 'a: 's>(
    stays: &'s [Stay<'a>],
    last: Option<&'a (String, i64)>,
    cfg: &'s CrossRegionConfig,
) -> impl Iterator<Item = Move<'a>> + 's {
    let before = last.map(|(country, at)| Stay {
        country: country.as_str(),
        first_ms: *at,
        last_ms: *at,
        requests: 0,
    });
    let sources = stays
        .iter()
        .filter(|s| s.requests >= cfg.min_requests)
        .copied()
        .chain(before);
    sources.flat_map(move |a| {
        stays.iter().filter_map(move |b| {
            if a.country == b.country || b.requests < cfg.min_requests || b.first_ms < a.first_ms {
                return None;
            }
            let km = geo::country_distance_km(a.country, b.country)?;
            if km < cfg.min_distance_km {
                return None;
            }
            let hours = ((b.first_ms - a.last_ms) as f64 / 3_600_000.0).max(0.0);
            let speed_kmh = if hours <= 0.0 {
                f64::INFINITY
            } else {
                km / hours
            };
            (speed_kmh > cfg.max_speed_kmh).then_some(Move {
                from: a.country,
                to: b.country,
                km,
                hours,
                speed_kmh,
            })
        })
    })
}

/// Fills a candidate's figures and facts for an impossible move.
fn describe_move(c: &mut Candidate, who: &str, m: &Move, cfg: &CrossRegionConfig) {
    c.severity = Severity::Critical;
    let shown_speed = if m.speed_kmh.is_finite() {
        m.speed_kmh
    } else {
        m.km * 60.0
    };
    (c.observed, c.expected, c.upper, c.score) = (shown_speed, 0.0, cfg.max_speed_kmh, 1.0);
    c.summary = format!(
        "{who} used from {} and {} ({:.0} km apart) within {:.0} minutes: impossible travel",
        m.from,
        m.to,
        m.km,
        m.hours * 60.0
    );
    c.facts.insert("from".into(), json!(m.from));
    c.facts.insert("to".into(), json!(m.to));
    c.facts.insert("distance_km".into(), json!(m.km.round()));
    c.facts.insert(
        "implied_speed_kmh".into(),
        if m.speed_kmh.is_finite() {
            json!(m.speed_kmh.round())
        } else {
            json!("simultaneous")
        },
    );
}

/// Per end user: the user's whereabouts and how long it has been seen.
#[derive(Debug, Clone, Default)]
pub(super) struct UserState {
    pub whereabouts: Whereabouts,
    pub minutes: u32,
}

impl Engine {
    pub(super) fn assess_travel(&self, data: &CycleData, ids: &CycleIds, out: &mut Vec<Candidate>) {
        let cfg = &self.config.cross_region;
        // Per key, its stays over the unfolded minutes. A key has few countries: a small
        // vector per key, and the candidates sorted by key at the end.
        let mut uses: FxMap<KeyId, (&str, Stays)> =
            FxMap::with_capacity_and_hasher(data.keys.len(), Default::default());
        for (u, id) in data.usage.iter().zip(&ids.usage) {
            if u.minute < self.folded_through || u.country.is_empty() {
                continue;
            }
            let (_, stays) = uses.entry(*id).or_insert((&u.api_key_id, Stays::new()));
            add_stay(stays, &u.country, u.first_ms, u.last_ms, u.requests);
        }
        let mut found: Vec<(&str, Candidate)> = Vec::new();
        for (id, (key, mut stays)) in uses {
            let Some(state) = self.keys.get(&id) else {
                continue;
            };
            if !self.key_enabled(Detector::CrossRegion, key, &state.project) {
                continue;
            }
            stays.sort_unstable_by(|a, b| a.country.cmp(b.country));
            let many = stays.len() as u64;
            let usual = state.countries.mean.max(1.0).ceil() as u64;
            let news = state.whereabouts.news(&stays, cfg);
            // Most keys, most cycles: nothing to say (and no candidate built).
            if news.is_none() && many < usual + cfg.countries_margin {
                continue;
            }
            let first = stays.iter().map(|s| s.first_ms).min().unwrap_or(0);
            let last = stays.iter().map(|s| s.last_ms).max().unwrap_or(first);
            let labels = [("api_key_id", key), ("project", state.project.as_str())];
            let mut c = Candidate::new(
                Detector::CrossRegion,
                &labels,
                (first / 1000) as u32,
                (last / 1000) as u32 + 1,
            );
            if let Some(m) = news {
                let first = state
                    .whereabouts
                    .last
                    .as_ref()
                    .map_or(first, |l| l.1.min(first));
                c.window_start_s = (first / 1000) as u32;
                describe_move(&mut c, &format!("key {key}"), &m, cfg);
                found.push((key, c));
                continue;
            }
            if many >= usual + cfg.countries_margin {
                c.observed = many as f64;
                c.expected = state.countries.mean;
                c.upper = (usual + cfg.countries_margin) as f64;
                c.score = 0.9;
                let list: Vec<&str> = stays.iter().map(|s| s.country).collect();
                c.summary = format!(
                    "key {key} used from {many} countries at once ({}), usually {usual}",
                    list.join(", ")
                );
                c.facts.insert("countries".into(), json!(list));
                found.push((key, c));
            }
        }
        found.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(found.into_iter().map(|(_, c)| c));
        if cfg.per_user {
            self.assess_user_travel(&data.users, out);
        }
    }

    /// Impossible travel of end users (the `user` field), across all the keys they use.
    fn assess_user_travel(&self, rows: &[UserUse], out: &mut Vec<Candidate>) {
        let cfg = &self.config.cross_region;
        let mut uses: BTreeMap<&str, (Stays, Vec<&str>)> = BTreeMap::new();
        for u in rows.iter().filter(|u| u.minute >= self.folded_through) {
            let (stays, keys) = uses.entry(&u.user).or_default();
            add_stay(stays, &u.country, u.first_ms, u.last_ms, u.requests);
            if !keys.contains(&u.api_key_id.as_str()) {
                keys.push(&u.api_key_id);
            }
        }
        for (user, (mut stays, keys)) in uses {
            let Some(state) = self.users.get(user) else {
                continue;
            };
            if state.minutes < USER_MIN_HISTORY_MINUTES {
                continue;
            }
            stays.sort_unstable_by(|a, b| a.country.cmp(b.country));
            let Some(m) = state.whereabouts.news(&stays, cfg) else {
                continue;
            };
            let first = stays.iter().map(|s| s.first_ms).min().unwrap_or(0);
            let last = stays.iter().map(|s| s.last_ms).max().unwrap_or(first);
            let mut c = Candidate::new(
                Detector::CrossRegion,
                &[("user", user)],
                (first / 1000) as u32,
                (last / 1000) as u32 + 1,
            );
            describe_move(&mut c, &format!("user {user}"), &m, cfg);
            c.facts.insert("api_key_ids".into(), json!(keys));
            out.push(c);
        }
    }

    /// Folds closed minutes of end-user use: whereabouts, pairs, history; forgets users idle for
    /// longer than any impossible move could span.
    pub(super) fn fold_users(&mut self, rows: &[UserUse], from: u32, closed_before: u32) {
        let cfg = self.config.cross_region.clone();
        let mut per_minute: BTreeMap<(&str, u32), Stays> = BTreeMap::new();
        for u in rows
            .iter()
            .filter(|u| u.minute >= from && u.minute < closed_before)
        {
            let stays = per_minute.entry((&u.user, u.minute)).or_default();
            add_stay(stays, &u.country, u.first_ms, u.last_ms, u.requests);
        }
        // Minutes in order per user (the map's order), so "last place" moves forward.
        for ((user, _), stays) in per_minute {
            let state = match self.users.get_mut(user) {
                Some(state) => state,
                None => self.users.entry(user.to_owned()).or_default(),
            };
            state.whereabouts.fold_minute(&stays, &cfg);
            state.minutes = state.minutes.saturating_add(1);
        }
        if closed_before / 3600 != from / 3600 {
            let horizon = i64::from(closed_before) * 1000 - USER_MEMORY_S * 1000;
            self.users.retain(|_, s| {
                s.whereabouts
                    .last
                    .as_ref()
                    .is_some_and(|(_, at)| *at >= horizon)
            });
        }
    }

    /// Folds closed minutes of a key's use into its whereabouts (last place, familiar pairs).
    pub(super) fn fold_key_travel(
        &mut self,
        rows: &[Usage],
        ids: &[KeyId],
        from: u32,
        closed_before: u32,
    ) {
        let cfg = self.config.cross_region.clone();
        let mut per_minute: FxMap<(KeyId, u32), Stays> = FxMap::default();
        for (u, id) in rows.iter().zip(ids) {
            if u.minute < from || u.minute >= closed_before || u.country.is_empty() {
                continue;
            }
            let stays = per_minute.entry((*id, u.minute)).or_default();
            add_stay(stays, &u.country, u.first_ms, u.last_ms, u.requests);
        }
        // Each key's minutes in order, so that its last place moves forward (a live cycle folds
        // one minute: nothing to sort).
        let mut per_minute: Vec<_> = per_minute.into_iter().collect();
        if closed_before.saturating_sub(from) > MINUTE {
            per_minute.sort_unstable_by_key(|m| m.0);
        }
        for ((id, _), stays) in per_minute {
            if let Some(state) = self.keys.get_mut(&id) {
                state.countries.update(stays.len() as f64, self.ip_alpha);
                state.whereabouts.fold_minute(&stays, &cfg);
            }
        }
    }
}

#[cfg(test)]
mod tests;
