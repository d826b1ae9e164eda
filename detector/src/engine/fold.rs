//! Folding closed minutes into each entity's models (zero-filled for idle minutes).

use super::*;

/// How often (seconds of event time) a key's usual model is sampled.
const USUAL_MODEL_SAMPLE_S: u32 = 600;

impl Engine {
    /// Folds every closed minute (< `closed_before`) not folded yet into the models.
    /// `crowd`: how busy everyone was in each minute (as the cycle's assessment saw it).
    pub(super) fn fold(
        &mut self,
        data: &CycleData,
        ids: &CycleIds,
        closed_before: u32,
        crowd: &sustained::Crowd,
    ) {
        if closed_before <= self.folded_through {
            return;
        }
        let from = self.folded_through;
        let closed = |minute: u32| minute >= from && minute < closed_before;
        let params = self.spend_params.clone();
        let sustained_config = self.config.spend_spike.sustained;

        // Keys: spend per minute, zero-filled for minutes without traffic.
        // Per key, its closed minutes in order (one in a live cycle, up to 60 in a replay
        // chunk): a small sorted vector rather than a BTreeMap allocated per key.
        type Minutes<'a> = smallvec::SmallVec<[(u32, &'a KeyMinute); 2]>;
        let mut spend: FxMap<KeyId, Minutes> =
            FxMap::with_capacity_and_hasher(data.keys.len(), Default::default());
        for (row, id) in data.keys.iter().zip(&ids.keys) {
            if closed(row.minute) {
                spend.entry(*id).or_default().push((row.minute, row));
            }
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
            if !self.keys.contains_key(key) {
                // A key id whose every request was refused (401/403) has nothing to learn from
                // (no spend, no usage), and a key scanner presents a new one per attempt: it is
                // tracked from its first accepted request.
                let Some(&(first, row)) =
                    minutes.iter().find(|(_, r)| r.auth_failures < r.requests)
                else {
                    continue;
                };
                let project = row.project.clone();
                self.keys.insert(
                    *key,
                    Box::new(KeyState {
                        project,
                        spend: SpendTrack::new(&params, first),
                        familiar: Familiar::default(),
                        ips: Ewma::default(),
                        traffic: Ewma::default(),
                        tokens: Ewma::default(),
                        previous: None,
                        throttled: Ewma::default(),
                        whereabouts: travel::Whereabouts::default(),
                        countries: Ewma::default(),
                        sustained: sustained::Evidence::default(),
                        requests_season: None,
                        usual_model: None,
                    }),
                );
            }
        }
        // Upstream attempts of each closed key-minute, for the retry window.
        let attempts: FxMap<(KeyId, u32), (u64, u64)> = data
            .retries
            .iter()
            .zip(&ids.retries)
            .filter(|(r, _)| closed(r.minute))
            .map(|(r, id)| ((*id, r.minute), (r.provider_attempts, r.provider_successes)))
            .collect();
        let ip_alpha = self.ip_alpha;
        let mut usual_requests = sustained::UsualByHour::default();
        let mut reference_requests = 0.0;
        for (key, state) in self.keys.iter_mut() {
            let minutes = spend.get(key);
            if let Some((minute, row)) = minutes.and_then(|m| m.last()) {
                if !row.project.is_empty() && state.project != row.project {
                    state.project.clone_from(&row.project);
                }
                state.spend.last_active = state.spend.last_active.max(*minute);
            }
            let mut minute = state.spend.last_folded.max(from);
            while minute < closed_before {
                let row = minutes.and_then(|m| {
                    m.binary_search_by_key(&minute, |v| v.0)
                        .ok()
                        .map(|i| m[i].1)
                });
                let how = hour_of_week(i64::from(minute) * 1000);
                let requests = row.map_or(0, sustained::billable);
                let usual = state.usual_requests_at(&params, minute);
                let reference = state.sustained.reference_requests();
                let crowding = crowd.factors(minute, requests, usual, reference);
                sustained::fold_key_minute(
                    &mut state.spend.model,
                    &mut state.sustained,
                    &mut state.requests_season,
                    &state.tokens,
                    &params,
                    &sustained_config,
                    row.map(|r| (r.cost_usd, requests, r.tokens)),
                    how,
                    crowding,
                );
                let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                state.previous = row.map(|r| {
                    // Upstream attempts are looked up only where something went wrong: a calm
                    // minute dilutes the window by its requests.
                    let (attempts, successes) = if r.failures > 0 || r.retries > 0 {
                        attempts.get(&(*key, minute)).copied().unwrap_or((0, 0))
                    } else {
                        (0, 0)
                    };
                    MinuteCounts {
                        minute,
                        requests: sat(r.requests),
                        retries: sat(r.retries),
                        failures: sat(r.failures),
                        attempts: sat(attempts),
                        successes: sat(successes.min(attempts)),
                    }
                });
                if let Some(row) = row.filter(|r| r.requests > 0) {
                    state.traffic.update(row.requests as f64, ip_alpha);
                    state.tokens.update(row.tokens as f64, ip_alpha);
                    state
                        .throttled
                        .update(row.throttled as f64 / row.requests as f64, ip_alpha);
                }
                if let Some(ips) = row.map(|r| r.distinct_ips).filter(|ips| *ips > 0) {
                    state.ips.update(ips as f64, ip_alpha);
                    state.familiar.note_active(minute);
                }
                minute += MINUTE;
            }
            state.spend.last_folded = closed_before;
            usual_requests.add(
                state.sustained.usual_requests(),
                state.requests_season.as_ref(),
                &params,
                closed_before,
            );
            reference_requests += sustained::crowd_weight(state.sustained.reference_requests());
        }
        // Each key's most called model in the last sampled minute (one in ten: a key's usual
        // model changes slowly, and the map costs a lookup per usage row).
        let mut top: FxMap<KeyId, (u32, u64, &str)> = FxMap::default();
        for (u, id) in data.usage.iter().zip(&ids.usage) {
            if !closed(u.minute) {
                continue;
            }
            if let Some(state) = self.keys.get_mut(id) {
                state.familiar.learn(u);
            }
            if u.minute % USUAL_MODEL_SAMPLE_S != 0 {
                continue;
            }
            let best = top.entry(*id).or_insert((u.minute, 0, &u.model));
            if (u.minute, u.requests) > (best.0, best.1) {
                *best = (u.minute, u.requests, &u.model);
            }
        }
        for (id, (_, _, model)) in top {
            if let Some(state) = self.keys.get_mut(&id) {
                // Only while the key's spend looks ordinary: an incident's model is not usual.
                let ordinary = state.sustained.spend_at_rest();
                if ordinary && !model.is_empty() && state.usual_model.as_deref() != Some(model) {
                    state.usual_model = Some(model.into());
                }
            }
        }
        self.fold_key_travel(&data.usage, &ids.usage, from, closed_before);
        if self.config.cross_region.per_user {
            self.fold_users(&data.users, from, closed_before);
        }
        let excused = self.excused_spend(data);
        for (rows, is_project) in [(&data.projects, true), (&data.overall, false)] {
            let mut per: FxMap<&str, BTreeMap<u32, f64>> = FxMap::default();
            for r in rows.iter().filter(|r| closed(r.minute)) {
                let excused = excused.get(r.minute, is_project.then_some(r.entity.as_str()));
                per.entry(&r.entity)
                    .or_default()
                    .insert(r.minute, r.cost_usd - excused);
            }
            for (entity, minutes) in per {
                // `per` holds only entities with rows: each map has a first and a last minute.
                let (Some(&first), Some(&last)) = (minutes.keys().next(), minutes.keys().last())
                else {
                    continue;
                };
                let track = if is_project {
                    self.projects
                        .entry(entity.to_owned())
                        .or_insert_with(|| SpendTrack::new(&params, first))
                } else {
                    self.overall
                        .get_or_insert_with(|| SpendTrack::new(&params, first))
                };
                track.last_active = track.last_active.max(last);
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
        self.usual_requests = usual_requests;
        self.reference_requests = reference_requests;
        self.folded_through = closed_before;
        self.evict(closed_before);
    }
}
