//! Realistic LLM gateway traffic, built from real traces, deterministic under a seed.
//!
//! Tripline's detectors are only as good as the traffic they are tried on, and uniform random
//! events teach nothing: real traffic has bursty arrivals, heavy-tailed token counts, a few keys
//! carrying most of the volume, daily rhythms, and errors that come in clusters. So the simulator
//! replays real data (see `data/traces/README.md`) and models only what the traces lack:
//!
//! - **Arrivals and tokens**: the inter-arrival gaps and token counts of a real trace
//!   ([`TraceSource`]), replayed in order from a seed-chosen row and time-scaled so that the
//!   long-run mean rate is [`SimConfig::rate_per_s`].
//! - **Keys**: key `i` follows the `i`-th busiest ServeGen client's share of requests (keys
//!   beyond the 162 clients cycle at half the share per round) and, with
//!   [`SimConfig::diurnal`], that client's hour-of-day curve at the key's local time. Project,
//!   team, users, country, region, client IPs, SDK and models are fixed per key.
//! - **Costs**: models come from the price table; most events omit `cost_usd` so that ingest
//!   prices them, 10 % state it (computed with [`tripline_core::price::PriceTable::builtin`]).
//! - **Failures**: a background rate plus per-provider degraded spells (bursts of 429/5xx),
//!   gateway-internal retries (two provider attempts behind one gateway 200) and client retries
//!   (same `idempotency_key`, `attempt` + 1, capped exponential backoff).
//! - **Incidents** ([`SimConfig::incidents`], e.g. [`standard_scenario`]): labelled spend spikes,
//!   leaked keys, key scanning, retry storms and impossible travel, and benign look-alikes that
//!   must not alert, injected on top of the background; [`Simulator::ground_truth`] says which
//!   key, when, and what to expect.
//!
//! Nothing here does IO or reads a clock: the same [`SimConfig`] gives byte-identical events.
//! Pacing the events in real time is the caller's business.
//!
//! ```
//! use tripline_simulate::{EventTopic, SimConfig, Simulator};
//! let mut sim = Simulator::new(SimConfig { seed: 7, rate_per_s: 50.0, ..SimConfig::default() });
//! let ev = sim.next_event().expect("a valid config never runs dry");
//! assert_eq!(ev.topic, EventTopic::Gateway);
//! ```

mod catalog;
mod faults;
mod incidents;
mod inject;
mod keys;
mod resolve;
mod traces;
mod traffic;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_incidents;

pub use incidents::{
    demo_scenario, standard_scenario, Incident, IncidentKind, IncidentPlan, UnknownIncidentKind,
    STANDARD_WARMUP_MS,
};

use std::fmt;
use std::str::FromStr;

use tripline_core::event::EventKind;

/// The real trace that supplies arrival gaps and token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TraceSource {
    /// Azure LLM inference 2023, code completion: bursty (per-minute CV about 1), long prompts,
    /// short completions.
    AzureCode,
    /// Azure LLM inference 2023, conversation: smooth arrivals, chat-sized prompts.
    #[default]
    AzureConv,
    /// Mooncake (Kimi) conversation trace: long contexts, several requests per millisecond.
    Mooncake,
}

impl TraceSource {
    pub const ALL: [TraceSource; 3] = [Self::AzureCode, Self::AzureConv, Self::Mooncake];

    /// The name accepted by [`FromStr`]: `azure-code`, `azure-conv` or `mooncake`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AzureCode => "azure-code",
            Self::AzureConv => "azure-conv",
            Self::Mooncake => "mooncake",
        }
    }
}

impl fmt::Display for TraceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trace name that is not one of [`TraceSource::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTraceSource(pub String);

impl fmt::Display for UnknownTraceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown trace {:?} (expected azure-code, azure-conv or mooncake)",
            self.0
        )
    }
}

impl std::error::Error for UnknownTraceSource {}

impl FromStr for TraceSource {
    type Err = UnknownTraceSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s.trim().to_ascii_lowercase().replace('_', "-"))
            .ok_or_else(|| UnknownTraceSource(s.to_owned()))
    }
}

/// What to simulate. Every field has a working default (`..SimConfig::default()`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds everything: key attributes, the trace starting row, every random draw. Ids
    /// (`event_id` = `sim-<seed hex>-<start_ms hex>-<n>`, `request_id`, `idempotency_key`)
    /// embed it and `start_ms`, so runs that differ in either never share an `event_id`.
    pub seed: u64,
    /// Long-run mean of new (first-attempt) gateway requests per second. Client retries come
    /// on top (about 1 % more). A rate that is not positive and finite yields no events.
    pub rate_per_s: f64,
    /// Number of API keys. Zero yields no events.
    pub keys: usize,
    /// Event time of the first request, in epoch ms.
    pub start_ms: i64,
    /// Which real trace drives arrivals and token counts.
    pub trace: TraceSource,
    /// Modulate each key's share by its ServeGen client's hour-of-day curve (at the key's local
    /// time), so that the mix of keys shifts over the day as in production.
    pub diurnal: bool,
    /// Target share of gateway request events that end in an error (4xx/5xx), clamped to
    /// 0..=0.5. About a third comes in per-provider bursts.
    pub failure_rate: f64,
    /// Also emit provider attempts on [`EventTopic::Provider`].
    pub provider_events: bool,
    /// Incidents to inject (none by default). Plans naming a key beyond `keys`, with a
    /// non-positive duration or a negative offset are ignored. See [`standard_scenario`].
    pub incidents: Vec<IncidentPlan>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            rate_per_s: 100.0,
            keys: 50,
            // 2026-11-26T10:00:00Z, a Thursday: daytime in Europe and Asia, before dawn in the US.
            start_ms: 1_795_687_200_000,
            trace: TraceSource::AzureConv,
            diurnal: true,
            failure_rate: 0.018,
            provider_events: true,
            incidents: Vec::new(),
        }
    }
}

/// The Kafka topic an event belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventTopic {
    /// Gateway requests (`tripline.gateway.requests` by default).
    Gateway,
    /// Provider attempts (`tripline.provider.attempts` by default).
    Provider,
}

impl From<EventTopic> for EventKind {
    fn from(topic: EventTopic) -> Self {
        match topic {
            EventTopic::Gateway => EventKind::Gateway,
            EventTopic::Provider => EventKind::Provider,
        }
    }
}

/// One event, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub topic: EventTopic,
    /// Partition key: the event's `api_key_id`, so a key's events stay in order.
    pub key: String,
    /// Event time in epoch ms (the payload's `ts`).
    pub ts_ms: i64,
    /// Contract v1 JSON.
    pub payload: Vec<u8>,
}

/// An endless, time-ordered stream of simulated events.
pub struct Simulator {
    config: SimConfig,
    /// `None` when the config asks for no traffic (no keys, or a rate that is not positive).
    engine: Option<traffic::Engine>,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        let mut config = config;
        config.failure_rate = if config.failure_rate.is_finite() {
            config.failure_rate.clamp(0.0, 0.5)
        } else {
            0.0
        };
        let runs = config.keys > 0 && config.rate_per_s.is_finite() && config.rate_per_s > 0.0;
        let engine = runs.then(|| traffic::Engine::new(config.clone()));
        Self { config, engine }
    }

    /// The next event, in non-decreasing `ts_ms` order. Never `None` for a config that produces
    /// traffic: stop on the event time instead.
    pub fn next_event(&mut self) -> Option<SimEvent> {
        self.engine.as_mut().map(traffic::Engine::next_event)
    }

    /// The `api_key_id` of every simulated key, busiest first (`key-0000`, `key-0001`, ...).
    pub fn key_ids(&self) -> Vec<String> {
        self.engine
            .as_ref()
            .map(traffic::Engine::key_ids)
            .unwrap_or_default()
    }

    /// The incidents injected, resolved: concrete keys (or the attacker's IP), windows and what
    /// to expect, in the order of [`SimConfig::incidents`]. Empty when the config produces no
    /// traffic.
    pub fn ground_truth(&self) -> Vec<Incident> {
        self.engine
            .as_ref()
            .map(|e| e.ground_truth().to_vec())
            .unwrap_or_default()
    }

    /// The configuration in effect (after clamping `failure_rate`).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.config)
            .field("runs", &self.engine.is_some())
            .finish_non_exhaustive()
    }
}

impl Iterator for Simulator {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        self.next_event()
    }
}
