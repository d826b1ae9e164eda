//! `tripline simulate`: realistic traffic from real traces, produced to Kafka either paced in
//! real time (timestamps = now) or as fast as possible from a fixed start (fully deterministic),
//! optionally with labelled incidents on top and their ground truth written to a file.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tripline_core::time::now_ms;

use anyhow::{bail, Context};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{info, warn};
use tripline_simulate::{
    demo_scenario, standard_scenario, EventTopic, IncidentKind, SimConfig, Simulator,
};

use crate::settings;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// The TOML config file: the Kafka brokers and topic names come from it. Without it, the
    /// built-in defaults (127.0.0.1:9092, tripline.gateway.requests, ...) plus environment
    /// overrides such as TRIPLINE_KAFKA_BROKERS.
    #[arg(long, short, env = "TRIPLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Mean gateway requests per second of event time.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How much event time to generate, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Seed of the random stream: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of API keys (tenants), with volumes as concentrated as real tenants'.
    #[arg(long, default_value_t = 50)]
    keys: usize,
    /// Event time of the first request (RFC 3339, e.g. 2026-11-26T10:00:00Z); default: now.
    /// Give it with --fast for a fully deterministic run.
    #[arg(long)]
    start: Option<String>,
    /// Send as fast as the broker takes it instead of pacing to the event timestamps (the
    /// default paces to real time).
    #[arg(long)]
    fast: bool,
    /// Labelled incidents on top of the background: `standard` spreads one or two of every kind
    /// (spend spikes and a ramp, a leaked key, key scanning, retry storms, impossible travel,
    /// and benign look-alikes) over the run after 40 minutes of warm-up; every kind from 5 h 30.
    /// `demo`: what a first run should see within minutes, from the second minute on models
    /// already warm (a leaked key, impossible travel, key scanning, a retry storm, a large
    /// spend spike; 7 minutes hold them all). `none`: background traffic only.
    #[arg(long, value_enum, default_value_t = Incidents::None)]
    incidents: Incidents,
    /// Write the ground truth here, one JSON object per incident and line: kind, detector (null
    /// when benign), key, start, end (RFC 3339), start_ms, end_ms, also_detected_by, note.
    /// Default: not written.
    #[arg(long)]
    truth: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Incidents {
    None,
    Standard,
    Demo,
}

/// At most this many messages awaiting broker acknowledgement.
const MAX_IN_FLIGHT: usize = 20_000;

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number (got {})", args.rate);
    }
    let loaded = settings::load(args.config.as_deref())?;
    let kafka = &loaded.config.kafka;
    let start_ms = match &args.start {
        Some(text) => tripline_core::time::parse_rfc3339_ms(text)
            .with_context(|| format!("--start {text:?} is not RFC 3339"))?,
        None => now_ms(),
    };
    let duration_ms = (args.duration_s as i64) * 1000;
    let end_ms = start_ms + duration_ms;
    let incidents = match args.incidents {
        Incidents::None => Vec::new(),
        Incidents::Standard => standard_scenario(start_ms, duration_ms, args.keys, args.seed),
        Incidents::Demo => demo_scenario(start_ms, duration_ms, args.keys, args.seed),
    };
    if args.incidents == Incidents::Standard {
        let missing: Vec<&str> = IncidentKind::ALL
            .iter()
            .filter(|k| !incidents.iter().any(|p| p.kind == **k))
            .map(|k| k.as_str())
            .collect();
        if !missing.is_empty() {
            warn!(
                missing = missing.join(","),
                "the run is too short (or has too few keys) for every incident kind: 4 h 30 min \
                 hold all but the slow move and the provider storm with backoff, 5 h 30 min all \
                 of them"
            );
        }
    }
    // A fresh broker has no topics yet: producing to one that does not exist fails.
    tripline_kafka::ensure_topics(
        kafka,
        tripline_kafka::process_env,
        &[kafka.gateway_topic.as_str(), kafka.provider_topic.as_str()],
        4,
    )
    .await
    .context("creating the gateway and provider topics")?;
    let producer: FutureProducer =
        tripline_kafka::producer_config(kafka, tripline_kafka::process_env)?.create()?;
    let simulator = Simulator::new(SimConfig {
        seed: args.seed,
        rate_per_s: args.rate,
        keys: args.keys,
        start_ms,
        incidents,
        ..SimConfig::default()
    });
    let truth = simulator.ground_truth();
    if let Some(path) = &args.truth {
        let lines: String = truth.iter().map(|i| i.to_json_line() + "\n").collect();
        std::fs::write(path, lines)
            .with_context(|| format!("cannot write the ground truth to {}", path.display()))?;
        info!(path = %path.display(), incidents = truth.len(), "ground truth written");
    }

    info!(
        rate = args.rate,
        duration_s = args.duration_s,
        keys = args.keys,
        seed = args.seed,
        fast = args.fast,
        incidents = truth.len(),
        "simulating"
    );
    let wall_start = Instant::now();
    let mut in_flight = VecDeque::new();
    let (mut gateway, mut provider, mut failed) = (0u64, 0u64, 0u64);
    for event in simulator {
        if event.ts_ms > end_ms {
            break;
        }
        if !args.fast {
            let due = wall_start + Duration::from_millis((event.ts_ms - start_ms).max(0) as u64);
            tokio::time::sleep_until(due.into()).await;
        }
        let topic = match event.topic {
            EventTopic::Gateway => {
                gateway += 1;
                &kafka.gateway_topic
            }
            EventTopic::Provider => {
                provider += 1;
                &kafka.provider_topic
            }
        };
        let record = FutureRecord::to(topic)
            .key(&event.key)
            .payload(&event.payload);
        in_flight.push_back(tripline_kafka::enqueue(&producer, record).await?);
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(delivery) = in_flight.pop_front() {
                failed += u64::from(tripline_kafka::delivered(delivery.await).is_err());
            }
        }
    }
    for delivery in in_flight {
        failed += u64::from(tripline_kafka::delivered(delivery.await).is_err());
    }
    producer.flush(Duration::from_secs(30))?;
    let elapsed = wall_start.elapsed().as_secs_f64();
    println!(
        "simulated {gateway} gateway requests and {provider} provider attempts in {elapsed:.1} s \
         ({:.0} messages/s); {failed} failed to send",
        (gateway + provider) as f64 / elapsed.max(1e-9)
    );
    if failed > 0 {
        bail!("{failed} messages were not acknowledged by Kafka");
    }
    Ok(())
}
