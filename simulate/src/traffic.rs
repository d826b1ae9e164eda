//! The traffic engine: replays a trace's arrivals, assigns each request to a key, decides its
//! fate and turns it into gateway and provider events, released in time order.
//!
//! A request produces events at several instants (the gateway event at its start, provider
//! attempts as they finish, a client retry seconds later), so generated events wait in a
//! min-heap and are released only when no request still to be generated could come before them:
//! new requests are generated in arrival order and never produce an event earlier than their
//! own start, so anything in the heap at or before the next arrival is final.
//!
//! Incidents ([`Injector`]) add requests of their own, merged in time order with the trace's
//! arrivals (the next arrival is the earlier of the two), and change how a key's own requests are
//! served while they last.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tripline_core::price::PriceTable;

use crate::catalog::{provider_index, Model, MODELS};
use crate::faults::{attempt_latency_ms, Failure, Faults, Verdict};
use crate::incidents::Incident;
use crate::inject::{Background, Context, Draft, Injector, Mode, Origin};
use crate::keys::{build_keys, pick_split, KeyProfile};
use crate::traces::{clients, trace, Trace};
use crate::{EventTopic, SimConfig, SimEvent};
use tripline_core::event::encode::{GatewayWire, ProviderWire};
use tripline_core::event::CONTRACT_VERSION;

mod serve;

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

pub(crate) fn prices() -> &'static PriceTable {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    PRICES.get_or_init(PriceTable::builtin)
}

/// One logical request as the client sends it; a client retry re-sends the same one.
#[derive(Debug, Clone)]
struct Request {
    key: usize,
    model: &'static Model,
    /// Index into the key's users; `None` sends no `user`.
    user: Option<usize>,
    /// Index into the key's addresses, used when `origin` is `None`.
    ip: usize,
    /// Another address, country, region and user agent than the key's own.
    origin: Option<Arc<Origin>>,
    prompt_tokens: u32,
    completion_tokens: u32,
    stream: bool,
    idempotency_key: String,
    attempt: u16,
    mode: Mode,
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
    injector: Injector,
    /// Each key's share of requests in one minute (epoch minute, shares), for incident rates.
    shares: (i64, Vec<f64>),
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
        let per_min = |key: usize, ts_ms: i64| {
            let weights = weights_at(&keys, config.diurnal, ts_ms);
            let total: f64 = weights.iter().sum();
            config.rate_per_s * 60.0 * weights[key] / total.max(f64::MIN_POSITIVE)
        };
        let injector = Injector::new(
            &config.incidents,
            &Context {
                seed: config.seed,
                start_ms: config.start_ms,
                keys: &keys,
                trace,
                per_min: &per_min,
            },
        );
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
            injector,
            shares: (i64::MIN, Vec::new()),
        }
    }

    pub fn ground_truth(&self) -> &[Incident] {
        self.injector.truth()
    }

    /// Each key's long-run share of requests.
    #[cfg(test)]
    pub(crate) fn key_shares(&self) -> Vec<f64> {
        self.keys.iter().map(|k| k.share).collect()
    }

    /// Per ground-truth incident, a drawn spend incident's figures.
    #[cfg(test)]
    pub(crate) fn spend_draws(&self) -> &[Option<crate::resolve::SpendDraw>] {
        self.injector.draws()
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    pub fn next_event(&mut self) -> SimEvent {
        loop {
            let trace_ts = self.config.start_ms + self.next_arrival_ms.floor() as i64;
            // An incident's request goes first when it is strictly earlier: ties keep the
            // background's order.
            let injected = self.injector.next().filter(|(t, _)| *t < trace_ts);
            let arrival_ts = injected.map_or(trace_ts, |(t, _)| t);
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
            } else if let Some((ts_ms, i)) = injected {
                let per_min = self.key_per_min(self.injector.key_of(i), ts_ms);
                if let Some(draft) = self.injector.take(i, per_min, &self.keys, self.trace) {
                    let request = self.request_from(draft);
                    self.serve(request, ts_ms);
                }
            } else {
                let request = self.arrive(trace_ts);
                self.serve(request, trace_ts);
            }
        }
    }

    /// The next request of the trace, assigned to a key; advances the arrival clock.
    fn arrive(&mut self, ts_ms: i64) -> Request {
        let row = self.trace.rows[self.cursor];
        // A daily peak compresses the trace's gaps (factor 1 outside one, the exact gap).
        self.next_arrival_ms +=
            self.trace.gap_after_ms(self.cursor) * self.scale / self.injector.peak_factor(ts_ms);
        self.cursor = (self.cursor + 1) % self.trace.rows.len();

        let key = self.pick_key(ts_ms);
        let profile = &self.keys[key];
        let rng = &mut self.rng;
        let model = &MODELS[profile.models[pick_split(rng, profile.models.len())]];
        let user = pick_split(rng, profile.users.len());
        let ip = pick_split(rng, profile.ips.len());
        let stream = rng.random_bool(profile.stream_p);
        let idempotency_key = self.next_idempotency_key();
        Request {
            key,
            model,
            user: Some(user),
            ip,
            origin: None,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            stream,
            idempotency_key,
            attempt: 1,
            mode: Mode::Normal,
        }
    }

    fn next_idempotency_key(&mut self) -> String {
        let key = format!("idem-{}-{}", self.run, self.logical);
        self.logical += 1;
        key
    }

    /// An incident's request, as a first attempt with ids of this run.
    fn request_from(&mut self, d: Draft) -> Request {
        Request {
            key: d.key,
            model: d.model,
            user: d.user,
            ip: d.ip,
            origin: d.origin,
            prompt_tokens: d.prompt_tokens,
            completion_tokens: d.completion_tokens,
            stream: d.stream,
            idempotency_key: self.next_idempotency_key(),
            attempt: 1,
            mode: d.mode,
        }
    }

    /// `key`'s own requests per minute at `ts_ms` (with any daily peak): what incidents scale.
    fn key_per_min(&mut self, key: usize, ts_ms: i64) -> f64 {
        let minute = ts_ms.div_euclid(60_000);
        if self.shares.0 != minute {
            let weights = weights_at(&self.keys, self.config.diurnal, ts_ms);
            let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            self.shares = (minute, weights.into_iter().map(|w| w / total).collect());
        }
        self.config.rate_per_s * 60.0 * self.shares.1[key] * self.injector.peak_factor(ts_ms)
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
        let mut sum = 0.0;
        self.picker = weights_at(&self.keys, self.config.diurnal, ts_ms)
            .into_iter()
            .map(|w| {
                sum += w;
                sum
            })
            .collect();
        self.picker_until_ms = (ts_ms.div_euclid(PICKER_REFRESH_MS) + 1) * PICKER_REFRESH_MS;
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

/// Every key's weight in the draw of the next request at `ts_ms`: its share, times its client's
/// rhythm at the key's local time when `diurnal`.
fn weights_at(keys: &[KeyProfile], diurnal: bool, ts_ms: i64) -> Vec<f64> {
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
    // With few keys every one of them can be asleep; then fall back to plain shares.
    let diurnal = diurnal && keys.iter().any(|k| weight(k, true) > 0.0);
    keys.iter().map(|k| weight(k, diurnal)).collect()
}
