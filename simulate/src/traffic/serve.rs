//! Serving one client attempt: what incidents make of it, the gateway's upstream attempts, the
//! events it produces and the client's retry.
//!
//! The background path draws from the engine's random stream in the same order as before
//! incidents existed, so a run without incidents is byte-for-byte what it was.

use super::*;

/// Retry storms: share of upstream failures that are 429s (the rest are 503s).
const STORM_429_SHARE: f64 = 0.75;

/// What the gateway did with one client attempt.
struct Served {
    outcome: Option<Failure>,
    attempts: Vec<Attempt>,
    /// When the gateway answered, in ms since the run's start.
    end: f64,
}

impl Engine {
    /// Runs one client attempt of `request` starting at `start_ms` and queues its events.
    pub(super) fn serve(&mut self, mut request: Request, start_ms: i64) {
        // Incidents change a key's own traffic (the background and its retries), never what
        // they add themselves.
        if matches!(request.mode, Mode::Normal) && request.origin.is_none() {
            let provider = request.model.provider;
            match self.injector.background(
                request.key,
                start_ms,
                provider,
                request.model.name,
                request.ip,
            ) {
                Background::Keep => {}
                Background::Drop => return,
                Background::Relocate(origin) => request.origin = Some(origin),
                Background::Storm(i) => request.mode = Mode::Storm(i),
                Background::Shift(model) => request.model = model,
            }
        }
        let elapsed = (start_ms - self.config.start_ms) as f64;
        let served = match request.mode {
            Mode::Storm(i) => self.storm_upstream(i, &request, elapsed),
            Mode::UnknownKey(_) => Served {
                // The gateway cannot resolve the key: it answers at once, calls no one.
                outcome: Some(Failure {
                    status: 401,
                    error_type: "auth",
                    retry_after_ms: None,
                }),
                attempts: Vec::new(),
                end: elapsed + self.rng.random_range(2.0..15.0),
            },
            Mode::Normal | Mode::NoClientRetry => self.upstream(&request, elapsed),
        };
        self.emit(&request, start_ms, &served);
        self.client_retry(request, &served);
    }

    /// The background's gateway: authentication, provider faults, one internal retry.
    fn upstream(&mut self, request: &Request, elapsed: f64) -> Served {
        let model = request.model;
        let provider = provider_index(model.provider);
        let rng = &mut self.rng;
        // The gateway authenticates before calling anyone; a 401 never reaches a provider.
        let mut t = elapsed + rng.random_range(2.0..20.0);
        let mut attempts: Vec<Attempt> = Vec::with_capacity(2);
        let outcome = match self.faults.gateway_rejects(rng) {
            Some(f) => {
                t += rng.random_range(1.0..10.0);
                Some(f)
            }
            None => {
                let mut verdict = self.faults.attempt(rng, provider, t);
                loop {
                    let latency = attempt_latency_ms(
                        rng,
                        verdict,
                        request.prompt_tokens,
                        request.completion_tokens,
                        model.ms_per_token,
                    );
                    t += latency;
                    attempts.push(Attempt {
                        end_ms: t,
                        latency_ms: latency,
                        failure: verdict.failure,
                    });
                    let retry = verdict.failure.is_some_and(|f| f.retryable())
                        && attempts.len() < 2
                        && rng.random_bool(INTERNAL_RETRY_P);
                    if !retry {
                        break verdict.failure;
                    }
                    t += rng.random_range(100.0..600.0);
                    verdict = self.faults.attempt(rng, provider, t);
                }
            }
        };
        let end = t + rng.random_range(1.0..15.0);
        Served {
            outcome,
            attempts,
            end,
        }
    }

    /// A gateway under retry storm `i`: upstream attempts fail with the storm's probability and
    /// fail fast; without backoff the gateway retries at once, up to three attempts.
    fn storm_upstream(&mut self, i: usize, request: &Request, elapsed: f64) -> Served {
        let backoff = self.injector.storm(i).is_some_and(|s| s.backoff);
        let max_attempts = if backoff { 1 } else { 3 };
        let rng = &mut self.rng;
        let mut t = elapsed + rng.random_range(1.0..5.0);
        let mut attempts: Vec<Attempt> = Vec::with_capacity(max_attempts);
        let outcome = loop {
            let p = self
                .injector
                .storm_fail_p(i, self.config.start_ms as f64 + t, request.attempt);
            let failure = rng.random_bool(p.clamp(0.0, 1.0)).then(|| {
                if rng.random_bool(STORM_429_SHARE) {
                    Failure {
                        status: 429,
                        error_type: "rate_limit",
                        retry_after_ms: Some(rng.random_range(10..=20) * 100),
                    }
                } else {
                    Failure {
                        status: 503,
                        error_type: "overloaded",
                        retry_after_ms: None,
                    }
                }
            });
            let latency = match failure.map(|f| f.status) {
                Some(429) => rng.random_range(3.0..30.0),
                Some(_) => rng.random_range(10.0..60.0),
                None => attempt_latency_ms(
                    rng,
                    Verdict {
                        failure: None,
                        slowdown: 1.5,
                    },
                    request.prompt_tokens,
                    request.completion_tokens,
                    request.model.ms_per_token,
                ),
            };
            t += latency;
            attempts.push(Attempt {
                end_ms: t,
                latency_ms: latency,
                failure,
            });
            if failure.is_none() || attempts.len() >= max_attempts {
                break failure;
            }
            t += rng.random_range(1.0..5.0);
        };
        let end = t + rng.random_range(1.0..5.0);
        Served {
            outcome,
            attempts,
            end,
        }
    }

    /// Queues the gateway event and the provider attempts of one served client attempt.
    fn emit(&mut self, request: &Request, start_ms: i64, served: &Served) {
        let key = &self.keys[request.key];
        let model = request.model;
        let elapsed = (start_ms - self.config.start_ms) as f64;
        let latency_ms = (served.end - elapsed).round() as u32;
        let state_cost = self.rng.random_bool(COST_SHARE);
        let cost = |failure: Option<Failure>| {
            (state_cost && failure.is_none()).then(|| {
                let usd = prices()
                    .lookup(model.provider, model.name)
                    .map_or(0.0, |p| {
                        p.cost_usd(request.prompt_tokens, request.completion_tokens)
                    });
                // To 1e-10 USD, as a bill states it, not `0.004200000000000001`.
                (usd * 1e10).round() / 1e10
            })
        };
        // A failed call used no tokens: written as none.
        let tokens = |failure: Option<Failure>, n: u32| if failure.is_none() { n } else { 0 };
        // A key the gateway does not know has no project, team, user or hint of its own.
        let (api_key_id, known) = match &request.mode {
            Mode::UnknownKey(id) => (id.as_ref(), false),
            _ => (key.id.as_str(), true),
        };
        let hint = if known {
            key.hint.clone()
        } else {
            let tail = api_key_id.len().saturating_sub(4);
            format!("sk-…{}", &api_key_id[tail..])
        };
        let (client_ip, country, region, user_agent) = match &request.origin {
            Some(o) => (o.ip.as_str(), o.country, o.region, o.user_agent),
            None => (
                key.ips[request.ip].as_str(),
                key.country,
                key.region,
                key.user_agent,
            ),
        };

        let request_id = format!("req-{}-{}", self.run, self.requests);
        self.requests += 1;
        let outcome = served.outcome;
        let gateway = GatewayWire {
            schema_version: CONTRACT_VERSION,
            event_id: &event_id(&self.run, &mut self.events),
            ts: start_ms,
            api_key_id,
            model: model.name,
            status: outcome.map_or(200, |f| f.status),
            key_hint: &hint,
            // Left out when the gateway could not resolve the key (a 401 for an unknown key).
            project: if known { &key.project } else { "" },
            team: if known { key.team } else { "" },
            user: request
                .user
                .filter(|_| known)
                .map_or("", |u| key.users[u].as_str()),
            provider: model.provider,
            error_type: outcome.map_or("", |f| f.error_type),
            prompt_tokens: tokens(outcome, request.prompt_tokens),
            completion_tokens: tokens(outcome, request.completion_tokens),
            cost_usd: cost(outcome),
            latency_ms,
            client_ip,
            client_country: country,
            gateway_region: region,
            user_agent,
            request_id: &request_id,
            idempotency_key: &request.idempotency_key,
            attempt: request.attempt,
            stream: request.stream,
        };
        let mut events = vec![(start_ms, EventTopic::Gateway, gateway.to_json())];
        if self.config.provider_events {
            for (i, a) in served.attempts.iter().enumerate() {
                let payload = ProviderWire {
                    schema_version: CONTRACT_VERSION,
                    event_id: &event_id(&self.run, &mut self.events),
                    ts: self.config.start_ms + a.end_ms.floor() as i64,
                    request_id: &request_id,
                    api_key_id,
                    provider: model.provider,
                    model: model.name,
                    attempt: i as u16 + 1,
                    status: a.failure.map_or(200, |f| f.status),
                    provider_region: region,
                    error_type: a.failure.map_or("", |f| f.error_type),
                    latency_ms: a.latency_ms.round() as u32,
                    retry_after_ms: a.failure.and_then(|f| f.retry_after_ms).unwrap_or(0),
                    prompt_tokens: tokens(a.failure, request.prompt_tokens),
                    completion_tokens: tokens(a.failure, request.completion_tokens),
                    cost_usd: cost(a.failure),
                };
                events.push((payload.ts, EventTopic::Provider, payload.to_json()));
            }
        }
        let partition_key = api_key_id.to_owned();
        for (ts_ms, topic, payload) in events {
            let event = SimEvent {
                topic,
                key: partition_key.clone(),
                ts_ms,
                payload,
            };
            self.push(ts_ms, Item::Emit(event));
        }
    }

    /// The client sees the final status and retries rate limits and server errors under the
    /// same idempotency key: the background with capped exponential backoff honouring
    /// Retry-After, storms at once or with plain doubling, incident traffic never.
    fn client_retry(&mut self, request: Request, served: &Served) {
        let Some(f) = served.outcome.filter(Failure::retryable) else {
            return;
        };
        let wait = match request.mode {
            Mode::Normal => {
                if request.attempt >= MAX_CLIENT_ATTEMPTS || !self.rng.random_bool(CLIENT_RETRY_P) {
                    return;
                }
                let backoff = 500.0
                    * f64::from(1u16 << (request.attempt - 1))
                    * self.rng.random_range(1.0..2.0);
                backoff
                    .max(f.retry_after_ms.map_or(0.0, f64::from))
                    .clamp(500.0, 4_000.0)
            }
            Mode::Storm(i) => {
                let Some(storm) = self.injector.storm(i) else {
                    return;
                };
                let (backoff, retry_p) = (storm.backoff, storm.client_retry_p);
                if request.attempt >= storm.max_client_attempts || !self.rng.random_bool(retry_p) {
                    return;
                }
                if backoff {
                    // 0.5, 1, 2, 4 s, ±10 %; Retry-After is ignored, as naive clients do.
                    500.0
                        * f64::from(1u16 << (request.attempt - 1))
                        * self.rng.random_range(0.9..1.1)
                } else {
                    self.rng.random_range(5.0..40.0)
                }
            }
            Mode::NoClientRetry | Mode::UnknownKey(_) => return,
        };
        let at = self.config.start_ms + (served.end + wait).floor() as i64;
        let retry = Request {
            attempt: request.attempt + 1,
            ..request
        };
        self.push(at, Item::Retry(Box::new(retry)));
    }
}
