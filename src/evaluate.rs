//! `tripline evaluate`: how well the detectors find labelled incidents. It simulates hours of
//! realistic traffic with the standard incident scenario, runs it through the real pipeline
//! (Kafka → ingest → ClickHouse), replays the stored minutes through the detectors as if time
//! were passing, and scores the alerts against the ground truth: recall, precision and time to
//! detect per detector.

mod score;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tripline_core::time::now_ms;
use tripline_simulate::{standard_scenario, EventTopic, Incident, SimConfig, Simulator};

use crate::roles::spawn_ingest;
use crate::settings;
use score::score;

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// The TOML config file: brokers, ClickHouse, and the [detect] thresholds under test
    /// (default: the built-in defaults plus environment overrides). Runs on scratch topics and a
    /// scratch database.
    #[arg(long, short, env = "TRIPLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Hours of event time to simulate (the standard scenario's first round needs up to
    /// 4 h 10 min; every kind fits from 5.5).
    #[arg(long, default_value_t = 4.5)]
    hours: f64,
    /// Hours of ordinary traffic (no incident) before those `--hours`, stored like the rest:
    /// the history a real start-up warms its models on (`detect.history_hours`, 24 by
    /// default), so that a key's daily rhythm can be known before it is judged. Only warms the
    /// models; alerts count from the end of it.
    #[arg(long, default_value_t = 0.0)]
    history_hours: f64,
    /// Mean gateway requests per second of background traffic.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Number of simulated API keys.
    #[arg(long, default_value_t = 40)]
    keys: usize,
    /// Seed of the simulated traffic and incidents: the same seed gives the same events.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the per-incident results and the alerts as JSON here (default: not written).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the evaluation database (for dashboards or backtests) instead of dropping it
    /// (default: dropped at the end).
    #[arg(long)]
    keep: bool,
    /// Seconds of event time between two assessments in the replay, 1 to 60. The live worker
    /// assesses every `detect.eval_interval_ms` (5 s by default), open minutes included; 60
    /// judges each minute only when it ends.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=60))]
    step_s: u32,
    /// Score again a database an earlier `--keep` run left (named in its output), skipping the
    /// simulation and the ingest: only the replay runs, so thresholds can be compared in
    /// seconds. Needs that run's `--end-ms` and the same `--hours`, `--keys` and `--seed`.
    #[arg(long, requires = "end_ms")]
    reuse_database: Option<String>,
    /// The end of the kept run's event time, in ms (its JSON's `end_ms`).
    #[arg(long, requires = "reuse_database")]
    end_ms: Option<i64>,
}

/// Where a run ends (without `--end-ms`): the last time, up to now, that the seed's own time of
/// day came round. The simulated keys follow their hours of the day, so a seed drawn at another
/// hour was other traffic (a run ended when it was drawn: DEV seeds 9-12 in session 24 at 14:33
/// UTC, seeds 1-8 in session 25 at 18:15): anchored this way a seed is the same traffic
/// whenever it is drawn, and the seeds still spread over the day. On a whole minute.
fn run_end_ms(seed: u64, now_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    // Seeded as the simulator seeds its draws: neighbouring seeds land far apart in the day.
    let minute_of_day: i64 = ChaCha8Rng::seed_from_u64(seed).random_range(0..1440);
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS + minute_of_day * 60_000;
    if today <= now_ms {
        today
    } else {
        today - DAY_MS
    }
}

pub async fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let loaded = settings::load(args.config.as_deref())?;
    // Milliseconds: evaluations run side by side (scripts/eval-seeds.sh) get topics and
    // databases of their own.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;

    // 1. Traffic with incidents, ending now (or when the reused run ended).
    if !(0.0..=168.0).contains(&args.history_hours) {
        bail!(
            "--history-hours must be 0 to 168 (got {})",
            args.history_hours
        );
    }
    let duration_ms = (args.hours * 3_600_000.0) as i64;
    let history_ms = (args.history_hours * 3_600_000.0) as i64 / 60_000 * 60_000;
    let end_ms = args
        .end_ms
        .unwrap_or_else(|| run_end_ms(args.seed, now_ms()));
    let start_ms = end_ms - duration_ms;
    // The scenario is laid out on the scored hours, then shifted past the history (offsets
    // count from the simulator's start).
    let mut incidents = standard_scenario(start_ms, duration_ms, args.keys, args.seed);
    for plan in &mut incidents {
        plan.offset_ms += history_ms;
    }
    let simulator = Simulator::new(SimConfig {
        seed: args.seed,
        rate_per_s: args.rate,
        keys: args.keys,
        start_ms: start_ms - history_ms,
        incidents,
        ..SimConfig::default()
    });
    let truth = simulator.ground_truth();
    if truth.is_empty() {
        bail!(
            "no incidents fit in {} hours with {} keys: use --hours 4.5 or more",
            args.hours,
            args.keys
        );
    }
    println!(
        "# tripline evaluate: {:.1} h (after {:.1} h of history) at {} requests/s, {} keys, \
         seed {}, {} incidents",
        args.hours,
        args.history_hours,
        args.rate,
        args.keys,
        args.seed,
        truth.len()
    );
    let database = match &args.reuse_database {
        Some(database) => database.clone(),
        None => format!("eval_{stamp}"),
    };
    let mut ch_config = loaded.config.clickhouse.clone();
    ch_config.database = database.clone();
    let clickhouse = tripline_store::client(&ch_config, loaded.clickhouse_password().as_deref());
    if args.reuse_database.is_none() {
        simulate_and_ingest(&loaded, simulator, end_ms, stamp, &clickhouse, &database).await?;
    }

    // 3. Replay the stored minutes through the detectors, one minute at a time.
    let mut config = loaded.config.detect.clone();
    config.allowed_lateness_s = 0; // the data is complete: a minute is judged when it ends
    let projects: HashMap<String, String> = clickhouse
        .query_raw(&format!(
            "SELECT api_key_id, any(project) FROM {} GROUP BY api_key_id",
            tripline_store::GATEWAY_TABLE
        ))
        .fetch_all::<(String, String)>()
        .await?
        .into_iter()
        .collect();
    apply_planned_overrides(&mut config, &truth);
    let first = (start_ms / 1000) as u32;
    let t = Instant::now();
    let span = tripline_detector::replay::Span {
        from_s: ((start_ms - history_ms) / 1000) as u32,
        active_from_s: first,
        to_s: (end_ms / 1000) as u32,
        step_s: args.step_s,
    };
    let firings = tripline_detector::replay::replay(&clickhouse, config, span, |_, _| {})
        .await
        .context("replaying through the detectors")?;
    println!(
        "replayed {} minutes through the detectors, every {} s, in {:.1} s",
        (end_ms / 1000 - i64::from(first)) / 60,
        args.step_s,
        t.elapsed().as_secs_f64()
    );

    // 4. Score.
    let report = score(&truth, &firings, &projects);
    report.print();
    if let Some(path) = &args.json {
        let run = serde_json::json!({
            "seed": args.seed, "hours": args.hours, "history_hours": args.history_hours,
            "rate": args.rate, "keys": args.keys,
            "step_s": args.step_s, "start_ms": start_ms, "end_ms": end_ms,
            "database": args.keep.then_some(&database),
            "tripline_version": env!("CARGO_PKG_VERSION"),
            "revision": revision(),
            // As configured, before the planned batch's per-key override.
            "detect_config": serde_json::to_value(&loaded.config.detect)?,
        });
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&report.json(&firings, run))?,
        )?;
        println!("details: {}", path.display());
    }
    if !args.keep && args.reuse_database.is_none() {
        tripline_store::drop_database(&clickhouse, &database, tripline_store::cluster(&ch_config))
            .await?;
    } else {
        println!("kept database {database}");
    }
    Ok(())
}

/// Steps 1 and 2 of a fresh run: the simulated events through Kafka (scratch topics) and the
/// real ingest into `database`, waiting until every gateway request is stored.
async fn simulate_and_ingest(
    loaded: &settings::Loaded,
    simulator: Simulator,
    end_ms: i64,
    stamp: u64,
    clickhouse: &clickhouse::Client,
    database: &str,
) -> anyhow::Result<()> {
    let kafka = settings::scratch_topics(&loaded.config.kafka, "eval", stamp).await?;
    let env = tripline_kafka::process_env;
    let producer: FutureProducer = tripline_kafka::producer_config(&kafka, env)?.create()?;
    let (mut gateway, mut provider) = (0u64, 0u64);
    let mut pending = std::collections::VecDeque::new();
    let t = Instant::now();
    for event in simulator {
        if event.ts_ms >= end_ms {
            break;
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
        pending.push_back(
            tripline_kafka::enqueue(
                &producer,
                FutureRecord::to(topic)
                    .key(&event.key)
                    .payload(&event.payload),
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
    println!(
        "produced {gateway} gateway requests and {provider} provider attempts in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. Through the real ingest into a database of its own.
    let cluster = tripline_store::cluster(&loaded.config.clickhouse);
    tripline_store::migrate(clickhouse, database, cluster).await?;
    let shutdown = CancellationToken::new();
    let task = spawn_ingest(loaded, &kafka, clickhouse, shutdown.clone())?;
    // Both tables whole before ingest stops: the provider attempts come on a topic of their own
    // and may lag the requests, and a storm the replay never sees is a miss the code did not make.
    let count = |table: &'static str| async move {
        clickhouse
            .query_raw(&format!("SELECT count() FROM {table}"))
            .fetch_one::<u64>()
            .await
    };
    let t = Instant::now();
    loop {
        let requests = count(tripline_store::GATEWAY_TABLE).await?;
        let attempts = count(tripline_store::PROVIDER_TABLE).await?;
        if requests >= gateway && attempts >= provider {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            bail!(
                "ingest stored only {requests} of {gateway} requests and {attempts} of \
                 {provider} provider attempts in 15 minutes"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    task.await??;
    println!("ingested in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// What was built: `TRIPLINE_REVISION` from the environment when set (scripts/eval-seeds.sh sets
/// it to `git describe --always --dirty` of the tree it builds), else the same variable at build
/// time, else none.
fn revision() -> Option<String> {
    std::env::var("TRIPLINE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| option_env!("TRIPLINE_REVISION").map(str::to_owned))
}

/// A planned batch job is announced: its operator raises the key's dollar floor and budget as the
/// ground truth prescribes ("... min_abs_usd = N, hourly_budget_usd = M"). The key's project is
/// left alone: a project override would also raise the floor of every other key in it.
fn apply_planned_overrides(config: &mut tripline_core::config::DetectConfig, truth: &[Incident]) {
    let number_after = |text: &str, name: &str| -> Option<f64> {
        let rest = &text[text.find(name)? + name.len()..];
        let rest = rest.trim_start_matches([' ', '=']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    for incident in truth
        .iter()
        .filter(|i| i.kind.as_str() == "benign_planned_batch")
    {
        let floor = number_after(&incident.note, "min_abs_usd");
        let hourly = number_after(&incident.note, "hourly_budget_usd");
        let o = tripline_core::config::EntityOverride {
            min_abs_usd: floor,
            hourly_budget_usd: hourly,
            ..Default::default()
        };
        println!(
            "planned batch on {}: override min_abs_usd = {floor:?}, hourly_budget_usd = {hourly:?}",
            incident.key
        );
        config.keys.insert(incident.key.clone(), o);
    }
}

#[cfg(test)]
mod tests {
    use super::run_end_ms;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn a_seed_ends_at_its_own_time_of_day_whenever_it_is_drawn() {
        let noon = 1_796_558_400_000; // 2026-12-06T12:00:00Z
        for seed in [1, 2, 9, 2017] {
            let end = run_end_ms(seed, noon);
            assert!(end <= noon && end > noon - DAY_MS, "seed {seed}");
            assert_eq!(end % 60_000, 0, "seed {seed}");
            // Drawn seven hours or three days later: the same time of day.
            for later in [7 * 3_600_000, 3 * DAY_MS + 1_234] {
                let again = run_end_ms(seed, noon + later);
                assert_eq!((again - end).rem_euclid(DAY_MS), 0, "seed {seed}");
                assert!(again <= noon + later, "seed {seed}");
            }
        }
        // Seeds spread over the day.
        let ends: std::collections::BTreeSet<i64> = (1..=20)
            .map(|seed| run_end_ms(seed, noon).rem_euclid(DAY_MS) / 3_600_000)
            .collect();
        assert!(ends.len() >= 10, "{ends:?}");
    }
}
