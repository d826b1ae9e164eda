//! `tripline bench`: sustained Kafka → ClickHouse throughput with enrichment on, measured in one
//! run against the raw consume rate of the broker and the raw insert rate of ClickHouse for the
//! same rows, so the end-to-end figure is a fraction of each (machine-independent).

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tripline_core::time::now_ms;

use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tripline_core::event::EventKind;
use tripline_ingest::process::{Outcome, Source};
use tripline_simulate::{EventTopic, SimConfig, Simulator};
use tripline_store::{GatewayRow, GATEWAY_TABLE};

use crate::roles::{build_processor, spawn_ingest};
use crate::settings;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The TOML config file: brokers, ClickHouse and the ingest batch settings come from it
    /// (default: the built-in defaults plus environment overrides). The benchmark uses scratch
    /// topics and a scratch database, never the configured ones.
    #[arg(long, short, env = "TRIPLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Gateway events to push through each stage (raw produce, raw insert, the pipeline).
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Keep ingest running this many extra seconds under a steady load to watch memory
    /// (0 = skip the soak phase).
    #[arg(long, default_value_t = 0)]
    soak_s: u64,
    /// Events per second produced during the soak phase.
    #[arg(long, default_value_t = 20_000.0)]
    soak_rate: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let loaded = settings::load(args.config.as_deref())?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let kafka = settings::scratch_topics(&loaded.config.kafka, "bench", stamp).await?;
    let env = tripline_kafka::process_env;

    println!("# tripline bench: {} gateway events", args.events);
    println!("machine: {} cores, {}", num_cpus(), cpu_model());

    // Stage 0: traffic from the simulator (real trace shapes), produced once.
    let start_ms = now_ms() - 3_600_000;
    let events: Vec<(String, Vec<u8>)> = Simulator::new(SimConfig {
        seed: 7,
        rate_per_s: 2_000.0,
        keys: 1_000,
        start_ms,
        ..SimConfig::default()
    })
    .filter(|e| matches!(e.topic, EventTopic::Gateway))
    .take(args.events)
    .map(|e| (e.key, e.payload))
    .collect();
    let bytes: usize = events.iter().map(|(_, p)| p.len()).sum();
    println!(
        "payload: {:.0} bytes/event on average",
        bytes as f64 / events.len() as f64
    );
    let producer: FutureProducer = tripline_kafka::producer_config(&kafka, env)?.create()?;
    let t = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for (key, payload) in &events {
        pending.push_back(
            tripline_kafka::enqueue(
                &producer,
                FutureRecord::to(&kafka.gateway_topic)
                    .key(key)
                    .payload(payload),
            )
            .await?,
        );
        if pending.len() > 50_000 {
            tripline_kafka::delivered(pending.pop_front().expect("non-empty").await)
                .map_err(anyhow::Error::msg)?;
        }
    }
    for delivery in pending {
        tripline_kafka::delivered(delivery.await).map_err(anyhow::Error::msg)?;
    }
    let produce_rate = events.len() as f64 / t.elapsed().as_secs_f64();
    println!("produce (acks=all):             {produce_rate:>10.0} events/s");

    // Stage 1: the broker's raw consume rate for these messages.
    let consumer: StreamConsumer =
        tripline_kafka::consumer_config(&kafka, &format!("bench-raw-{stamp}"), env)?.create()?;
    consumer.subscribe(&[&kafka.gateway_topic])?;
    let mut seen = 0usize;
    let mut t = None;
    while seen < events.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("raw consume stalled")??;
        t.get_or_insert_with(Instant::now);
        seen += usize::from(rdkafka::Message::payload(&message).is_some());
    }
    let consume_rate = events.len() as f64 / t.map_or(1e-9, |t| t.elapsed().as_secs_f64());
    tripline_kafka::close_consumer(consumer, Duration::from_secs(5)).await;
    println!("raw consume:                    {consume_rate:>10.0} events/s");

    // Stage 2: ClickHouse's raw insert rate for the same rows (already enriched), with the
    // same schema and materialized views, in batches of the configured size.
    let mut processor = build_processor(&loaded)?;
    let rows: Vec<GatewayRow> = events
        .iter()
        .enumerate()
        .filter_map(|(i, (_, payload))| {
            let source = Source {
                topic: "bench",
                partition: 0,
                offset: i as i64,
            };
            match processor.process(EventKind::Gateway, payload, source, now_ms()) {
                Outcome::Gateway(row) => Some(*row),
                _ => None,
            }
        })
        .collect();
    if rows.len() != events.len() {
        bail!(
            "only {} of {} simulated events were valid",
            rows.len(),
            events.len()
        );
    }
    let base = loaded.clickhouse();
    let raw_db = format!("bench_raw_{stamp}");
    let cluster = tripline_store::cluster(&loaded.config.clickhouse);
    tripline_store::migrate(&base, &raw_db, cluster).await?;
    let raw_client = base.clone().with_database(&raw_db);
    let t = Instant::now();
    for chunk in rows.chunks(loaded.config.ingest.batch_max_rows) {
        let mut insert = raw_client.insert::<GatewayRow>(GATEWAY_TABLE).await?;
        for row in chunk {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    let insert_rate = rows.len() as f64 / t.elapsed().as_secs_f64();
    println!("raw clickhouse insert:          {insert_rate:>10.0} rows/s");

    // Stage 3: the real ingest pipeline, end to end, into its own database; then again with
    // two workers in one consumer group (in this process: what a second worker adds on the
    // same machine), each run reading the topic from the start under a group of its own.
    // The soak phase, if any, runs on the one-worker pipeline before it stops.
    let soaking = (args.soak_s > 0).then_some((&args, events.as_slice()));
    let one = pipeline(
        &loaded,
        &kafka,
        &format!("bench_e2e_{stamp}"),
        1,
        events.len(),
        soaking,
    )
    .await?;
    let e2e_rate = one.rate;
    println!("end to end (enrichment on):     {e2e_rate:>10.0} events/s");
    println!(
        "  = {:.2} of raw consume, {:.2} of raw insert",
        e2e_rate / consume_rate,
        e2e_rate / insert_rate
    );
    println!(
        "  ingest CPU: {:.2} µs/event (process CPU incl. librdkafka threads, both cores)",
        one.cpu_s * 1e6 / events.len() as f64
    );
    println!(
        "  RSS: {} MiB before, {} MiB peak",
        one.rss0_kib / 1024,
        one.peak_rss_kib / 1024
    );
    let two = pipeline(
        &loaded,
        &kafka,
        &format!("bench_e2e2_{stamp}"),
        2,
        events.len(),
        None,
    )
    .await?;
    println!(
        "end to end, two workers:        {:>10.0} events/s = {:.2} x one worker",
        two.rate,
        two.rate / e2e_rate
    );

    tripline_store::drop_database(&base, &raw_db, cluster).await?;
    Ok(())
}

/// Keyed payloads, as produced to the bench topic.
type Events = [(String, Vec<u8>)];

/// What one run of the ingest pipeline measured.
struct PipelineRun {
    rate: f64,
    cpu_s: f64,
    rss0_kib: u64,
    peak_rss_kib: u64,
}

/// Runs `workers` ingest workers in one new consumer group over the bench topic until
/// `database` holds all the events, then the soak phase if asked; drops the database after.
async fn pipeline(
    loaded: &settings::Loaded,
    kafka: &tripline_core::config::KafkaConfig,
    database: &str,
    workers: usize,
    events: usize,
    soaking: Option<(&BenchArgs, &Events)>,
) -> anyhow::Result<PipelineRun> {
    let cluster = tripline_store::cluster(&loaded.config.clickhouse);
    let mut ch_config = loaded.config.clickhouse.clone();
    ch_config.database = database.to_owned();
    let client = tripline_store::client(&ch_config, loaded.clickhouse_password().as_deref());
    tripline_store::migrate(&client, database, cluster).await?;
    let mut kafka = kafka.clone();
    kafka.ingest_group_id = format!("{database}-group");
    let shutdown = CancellationToken::new();
    let (cpu0, t) = (cpu_seconds(), Instant::now());
    let rss0_kib = rss_kib();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(spawn_ingest(loaded, &kafka, &client, shutdown.clone())?);
    }
    let mut peak_rss_kib = rss0_kib;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss_kib = peak_rss_kib.max(rss_kib());
        let count: u64 = client
            .query_raw("SELECT count() FROM gateway_requests")
            .fetch_one()
            .await?;
        if count as usize >= events {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("end-to-end run ({workers} workers) did not finish in 10 minutes ({count} rows)");
        }
    }
    let run = PipelineRun {
        rate: events as f64 / t.elapsed().as_secs_f64(),
        cpu_s: cpu_seconds() - cpu0,
        rss0_kib,
        peak_rss_kib,
    };
    if let Some((args, payloads)) = soaking {
        soak(&kafka, args, payloads, peak_rss_kib).await?;
    }
    shutdown.cancel();
    for task in tasks {
        task.await??;
    }
    let base = loaded.clickhouse();
    tripline_store::drop_database(&base, database, cluster).await?;
    Ok(run)
}

/// Keeps producing at `soak_rate` for `soak_s` seconds while ingest runs, printing RSS.
async fn soak(
    kafka: &tripline_core::config::KafkaConfig,
    args: &BenchArgs,
    events: &Events,
    start_rss: u64,
) -> anyhow::Result<()> {
    let producer: FutureProducer =
        tripline_kafka::producer_config(kafka, tripline_kafka::process_env)?.create()?;
    println!(
        "soak: {} s at {:.0} events/s (new event ids, real payload shapes)",
        args.soak_s, args.soak_rate
    );
    let t = Instant::now();
    let mut sent = 0u64;
    let mut next_report = 0u64;
    let mut samples = Vec::new();
    while t.elapsed().as_secs() < args.soak_s {
        let due = (t.elapsed().as_secs_f64() * args.soak_rate) as u64;
        while sent < due {
            let (key, payload) = &events[sent as usize % events.len()];
            let text = String::from_utf8_lossy(payload).replacen(
                "\"event_id\":\"",
                &format!("\"event_id\":\"soak{sent}-"),
                1,
            );
            let record = FutureRecord::to(&kafka.gateway_topic)
                .key(key)
                .payload(text.as_bytes());
            drop(tripline_kafka::enqueue(&producer, record).await?);
            sent += 1;
        }
        if t.elapsed().as_secs() >= next_report {
            let rss = rss_kib();
            samples.push(rss);
            println!(
                "  t={:>4}s rss={} MiB sent={sent}",
                t.elapsed().as_secs(),
                rss / 1024
            );
            next_report += 30;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let max = samples.iter().copied().max().unwrap_or(start_rss);
    let last = samples.last().copied().unwrap_or(start_rss);
    println!(
        "soak RSS: start {} MiB, max {} MiB, end {} MiB",
        start_rss / 1024,
        max / 1024,
        last / 1024
    );
    Ok(())
}

/// User + system CPU of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}
