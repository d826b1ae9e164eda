//! The traffic engine: replays a trace's arrivals, assigns each request to a key, decides its
//! fate and turns it into gateway and provider events, released in time order.
//!
//! A request produces events at several instants (the gateway event at its start, provider
//! attempts as they finish, a client retry seconds later), so generated events wait in a
//! min-heap and are released only when no request still to be generated could come before them:
//! new requests are generated in arrival order and never produce an event earlier than their
//! own start, so anything in the heap at or before the next arrival is final.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tripline_core::price::PriceTable;

use crate::catalog::{provider_index, MODELS};
use crate::faults::{attempt_latency_ms, Failure, Faults};
use crate::keys::{build_keys, pick_split, KeyProfile};
use crate::payload::{to_json, GatewayPayload, ProviderPayload, SCHEMA_VERSION};
use crate::traces::{clients, trace, Trace};
use crate::{EventTopic, SimConfig, SimEvent};

/// Share of events that state `cost_usd` themselves; ingest prices the rest from its table.
const COST_SHARE: f64 = 0.1;
/// Probability that the gateway retries a retryable provider failure once, internally.
const INTERNAL_RETRY_P: f64 = 0.5;
/// Probability that a client retries a 429 or 5xx it received.
const CLIENT_RETRY_P: f64 = 0.7;
/// Clients give up after this many attempts of one logical request.
const MAX_CLIENT_ATTEMPTS: u16 = 3;
/// Key weights follow the diurnal curves at this granularity.
const PICKER_REFRESH_MS: i64 = 60_000;

fn prices() -> &'static PriceTable {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    PRICES.get_or_init(PriceTable::builtin)
}

/// One logical request as the client sends it; a client retry re-sends the same one.
#[derive(Debug, Clone)]
struct Request {
    key: usize,
    model: usize,
    user: usize,
    ip: usize,
    prompt_tokens: u32,
    completion_tokens: u32,
    stream: bool,
    idempotency_key: String,
    attempt: u16,
}

#[derive(Debug)]
enum Item {
    Emit(SimEvent),
    /// A client retry, served when its time comes so that it meets the provider's state then.
    Retry(Box<Request>),
}

#[derive(Debug)]
struct Pending {
    ts_ms: i64,
    /// Insertion order: breaks ties so that equal timestamps come out deterministically.
    seq: u64,
    item: Item,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ts_ms, self.seq).cmp(&(other.ts_ms, other.seq))
    }
}

/// One provider attempt, as the gateway saw it.
struct Attempt {
    end_ms: f64,
    latency_ms: f64,
    failure: Option<Failure>,
}

#[derive(Debug)]
pub(crate) struct Engine {
    config: SimConfig,
    /// `<seed hex>-<start_ms hex>`, in every id: ingest deduplicates on `event_id`, so a second
    /// run with the same seed but a new start must not reuse the first run's ids.
    run: String,
    rng: ChaCha8Rng,
    keys: Vec<KeyProfile>,
    /// Cumulative key weights, valid until `picker_until_ms`.
    picker: Vec<f64>,
    picker_until_ms: i64,
    trace: &'static Trace,
    cursor: usize,
    /// Simulated ms per trace ms, so that the long-run rate is `rate_per_s`.
    scale: f64,
    /// Start of the next new request, in ms since `start_ms`.
    next_arrival_ms: f64,
    faults: Faults,
    pending: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    events: u64,
    requests: u64,
    logical: u64,
}

impl Engine {
    /// `config` must have a positive, finite rate and at least one key.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let keys = build_keys(config.seed, config.keys);
        let trace = trace(config.trace);
        // A seed-dependent starting row, so that different seeds replay different stretches.
        let cursor = rng.random_range(0..trace.rows.len());
        let scale = 1000.0 / (config.rate_per_s * trace.mean_gap_ms);
        let faults = Faults::new(&mut rng, config.failure_rate);
        Self {
            run: format!("{:x}-{:x}", config.seed, config.start_ms),
            config,
            rng,
            keys,
            picker: Vec::new(),
            picker_until_ms: i64::MIN,
            trace,
            cursor,
            scale,
            next_arrival_ms: 0.0,
            faults,
            pending: BinaryHeap::new(),
            seq: 0,
            events: 0,
            requests: 0,
            logical: 0,
        }
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    pub fn next_event(&mut self) -> SimEvent {
        loop {
            let arrival_ts = self.config.start_ms + self.next_arrival_ms.floor() as i64;
            let due = self
                .pending
                .peek()
                .is_some_and(|Reverse(p)| p.ts_ms <= arrival_ts);
            if due {
                let Some(Reverse(p)) = self.pending.pop() else {
                    continue;
                };
                match p.item {
                    Item::Emit(event) => return event,
                    Item::Retry(request) => self.serve(*request, p.ts_ms),
                }
            } else {
                let request = self.arrive(arrival_ts);
                self.serve(request, arrival_ts);
            }
        }
    }

    /// The next request of the trace, assigned to a key; advances the arrival clock.
    fn arrive(&mut self, ts_ms: i64) -> Request {
        let row = self.trace.rows[self.cursor];
        self.next_arrival_ms += self.trace.gap_after_ms(self.cursor) * self.scale;
        self.cursor = (self.cursor + 1) % self.trace.rows.len();

        let key = self.pick_key(ts_ms);
        let profile = &self.keys[key];
        let rng = &mut self.rng;
        let model = profile.models[pick_split(rng, profile.models.len())];
        let user = pick_split(rng, profile.users.len());
        let ip = pick_split(rng, profile.ips.len());
        let stream = rng.random_bool(profile.stream_p);
        let idempotency_key = format!("idem-{}-{}", self.run, self.logical);
        self.logical += 1;
        Request {
            key,
            model,
            user,
            ip,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            stream,
            idempotency_key,
            attempt: 1,
        }
    }

    /// A key drawn by share, times the client's rhythm at the key's local time of day.
    fn pick_key(&mut self, ts_ms: i64) -> usize {
        if ts_ms >= self.picker_until_ms {
            self.refresh_picker(ts_ms);
        }
        let total = self.picker.last().copied().unwrap_or(0.0);
        let u = self.rng.random::<f64>() * total;
        self.picker
            .partition_point(|&c| c <= u)
            .min(self.keys.len() - 1)
    }

    fn refresh_picker(&mut self, ts_ms: i64) {
        let clients = clients();
        let minute_utc = ts_ms.div_euclid(60_000);
        let weight = |k: &KeyProfile, diurnal: bool| {
            if !diurnal {
                return k.share;
            }
            let local = (minute_utc + i64::from(k.utc_offset_min)).rem_euclid(1440);
            let (hour, frac) = ((local / 60) as usize, (local % 60) as f64 / 60.0);
            let day = &clients[k.client].hourly;
            k.share * (day[hour] * (1.0 - frac) + day[(hour + 1) % 24] * frac)
        };
        let mut diurnal = self.config.diurnal;
        // With few keys every one of them can be asleep; then fall back to plain shares.
        if diurnal && self.keys.iter().all(|k| weight(k, true) <= 0.0) {
            diurnal = false;
        }
        let mut sum = 0.0;
        self.picker = self
            .keys
            .iter()
            .map(|k| {
                sum += weight(k, diurnal);
                sum
            })
            .collect();
        self.picker_until_ms = (ts_ms.div_euclid(PICKER_REFRESH_MS) + 1) * PICKER_REFRESH_MS;
    }

    /// Runs one client attempt of `request` starting at `start_ms` and queues its events.
    fn serve(&mut self, request: Request, start_ms: i64) {
        let key = &self.keys[request.key];
        let key_id = key.id.clone();
        let model = &MODELS[request.model];
        let provider = provider_index(model.provider);
        let elapsed = (start_ms - self.config.start_ms) as f64;
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
        let latency_ms = (end - elapsed).round() as u32;
        let state_cost = rng.random_bool(COST_SHARE);
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
        let tokens = |failure: Option<Failure>, n: u32| failure.is_none().then_some(n);

        let request_id = format!("req-{}-{}", self.run, self.requests);
        self.requests += 1;
        let gateway = GatewayPayload {
            schema_version: SCHEMA_VERSION,
            event_id: &event_id(&self.run, &mut self.events),
            ts: start_ms,
            api_key_id: &key.id,
            key_hint: &key.hint,
            project: &key.project,
            team: key.team,
            user: &key.users[request.user],
            provider: model.provider,
            model: model.name,
            status: outcome.map_or(200, |f| f.status),
            error_type: outcome.map(|f| f.error_type),
            prompt_tokens: tokens(outcome, request.prompt_tokens),
            completion_tokens: tokens(outcome, request.completion_tokens),
            cost_usd: cost(outcome),
            latency_ms,
            client_ip: &key.ips[request.ip],
            client_country: key.country,
            gateway_region: key.region,
            user_agent: key.user_agent,
            request_id: &request_id,
            idempotency_key: &request.idempotency_key,
            attempt: request.attempt,
            stream: request.stream,
        };
        let mut events = vec![(start_ms, EventTopic::Gateway, to_json(&gateway))];
        if self.config.provider_events {
            for (i, a) in attempts.iter().enumerate() {
                let payload = ProviderPayload {
                    schema_version: SCHEMA_VERSION,
                    event_id: &event_id(&self.run, &mut self.events),
                    ts: self.config.start_ms + a.end_ms.floor() as i64,
                    request_id: &request_id,
                    api_key_id: &key.id,
                    provider: model.provider,
                    model: model.name,
                    attempt: i as u16 + 1,
                    status: a.failure.map_or(200, |f| f.status),
                    provider_region: key.region,
                    error_type: a.failure.map(|f| f.error_type),
                    latency_ms: a.latency_ms.round() as u32,
                    retry_after_ms: a.failure.and_then(|f| f.retry_after_ms),
                    prompt_tokens: tokens(a.failure, request.prompt_tokens),
                    completion_tokens: tokens(a.failure, request.completion_tokens),
                    cost_usd: cost(a.failure),
                };
                events.push((payload.ts, EventTopic::Provider, to_json(&payload)));
            }
        }
        for (ts_ms, topic, payload) in events {
            let event = SimEvent {
                topic,
                key: key_id.clone(),
                ts_ms,
                payload,
            };
            self.push(ts_ms, Item::Emit(event));
        }

        // The client sees the final status; it retries rate limits and server errors with
        // capped exponential backoff, honouring Retry-After, under the same idempotency key.
        if let Some(f) = outcome.filter(Failure::retryable) {
            if request.attempt < MAX_CLIENT_ATTEMPTS && self.rng.random_bool(CLIENT_RETRY_P) {
                let backoff = 500.0
                    * f64::from(1u16 << (request.attempt - 1))
                    * self.rng.random_range(1.0..2.0);
                let wait = backoff
                    .max(f.retry_after_ms.map_or(0.0, f64::from))
                    .clamp(500.0, 4_000.0);
                let at = self.config.start_ms + (end + wait).floor() as i64;
                let retry = Request {
                    attempt: request.attempt + 1,
                    ..request
                };
                self.push(at, Item::Retry(Box::new(retry)));
            }
        }
    }

    fn push(&mut self, ts_ms: i64, item: Item) {
        self.seq += 1;
        self.pending.push(Reverse(Pending {
            ts_ms,
            seq: self.seq,
            item,
        }));
    }
}

/// A unique, deterministic event id: the run tag and a per-simulator counter.
fn event_id(run: &str, counter: &mut u64) -> String {
    let id = format!("sim-{run}-{counter}");
    *counter += 1;
    id
}
