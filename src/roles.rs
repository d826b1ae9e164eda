//! Wiring the long-running roles: config → clients → ingest and the HTTP server, with signals
//! turned into an orderly shutdown (stop polling, flush, insert, commit).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_api::server::{self, AppState};
use tripline_core::secret::Fingerprinter;
use tripline_ingest::process::Processor;
use tripline_ingest::{Ingest, IngestHealth};

use crate::live_config;
use crate::settings::{self, Loaded};

/// `tripline run` / `tripline ingest`.
/// Which long-running roles a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub ingest: bool,
    pub detect: bool,
    /// The alerting service (`tripline alert`; in `tripline run` only when `[alerting]` names
    /// a receiver).
    pub alert: bool,
}

pub async fn serve(config_path: Option<&Path>, roles: Roles) -> anyhow::Result<()> {
    let loaded = settings::load(config_path)?;
    let metrics = server::install_metrics_recorder()?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    // The config file as it is now, for the roles that follow it (ingest reads it at start).
    let followed = config_path.filter(|_| roles.detect || roles.alert);
    let live = live_config::watch(&loaded, followed, shutdown.clone());

    // Only ingest fingerprints secrets and enriches: a detect-only or alert-only process needs
    // neither the fingerprint secret nor the IP databases.
    let processor = if roles.ingest {
        Some(build_processor(&loaded)?)
    } else {
        None
    };
    let clickhouse = loaded.clickhouse();
    let health = Arc::new(IngestHealth::default());
    let detector_health = Arc::new(tripline_detector::DetectorHealth::default());
    let listen: SocketAddr = loaded.config.server.listen.parse()?;
    // The collector is ingest's HTTP door: `run` and `ingest` serve it, detect-only workers do not.
    let collector = if roles.ingest {
        build_collector(&loaded)?
    } else {
        None
    };
    // Alerting is built before the server so that its API is served, and started after the
    // migrations and topics exist (subscribing to a missing topic stalls on tansu).
    let (alerting, alert_api) = if roles.alert {
        let (prepared, api) = crate::alert::prepare(&loaded, config_path, &live)?;
        (Some(prepared), api)
    } else {
        (None, None)
    };
    // The server's extra routes: the collector's and the alerting API.
    let collector = match (collector, alert_api) {
        (Some(c), Some(a)) => Some(c.merge(a)),
        (c, a) => c.or(a),
    };
    let server = tokio::spawn(server::serve(
        listen,
        AppState {
            metrics,
            ingest: roles.ingest.then(|| health.clone()),
            detector: roles.detect.then(|| detector_health.clone()),
            alerting: alerting.as_ref().map(|prepared| prepared.health()),
            collector,
        },
        shutdown.clone(),
    ));

    let kafka = &loaded.config.kafka;
    let mut topics = vec![
        kafka.gateway_topic.as_str(),
        kafka.provider_topic.as_str(),
        kafka.dlq_topic.as_str(),
    ];
    if roles.alert {
        // Subscribing to a topic that does not exist yet stalls the consumer on tansu.
        topics.push(kafka.alerts_topic.as_str());
    }
    if let Err(err) =
        tripline_kafka::ensure_topics(kafka, tripline_kafka::process_env, &topics, 4).await
    {
        warn!(%err, "could not create topics; assuming they exist");
    }

    // Alerting does not wait for ClickHouse: its state is on disk, and its delivery log keeps
    // rows (and retries) until the `notifications` table exists. A page must not wait for the
    // database.
    let alone = !roles.ingest && !roles.detect;
    let alerting = alerting.map(|prepared| prepared.spawn(shutdown.clone(), alone));
    if !migrate_until_done(&loaded, &shutdown).await {
        if let Some(alerting) = alerting {
            let _ = alerting.await;
        }
        return Ok(());
    }
    let detector = roles.detect.then(|| {
        let config = live_config::section(&live, |c| c.detect.clone());
        let (loaded, shutdown) = (loaded.clone(), shutdown.clone());
        tokio::spawn(supervise("detect", shutdown.clone(), move || {
            let health = detector_health.clone();
            crate::detect::spawn(&loaded, config.clone(), health, shutdown.clone())
        }))
    });
    // `[[sources]]` with a Kafka topic: read by ingest processes, each in its source's group.
    let readers = if roles.ingest {
        build_source_readers(&loaded)?
            .into_iter()
            .map(|reader| tokio::spawn(reader.run(shutdown.clone())))
            .collect()
    } else {
        Vec::new()
    };
    let result = if let (true, Some(processor)) = (roles.ingest, processor) {
        let ingest = Ingest {
            kafka: loaded.config.kafka.clone(),
            settings: loaded.config.ingest.clone(),
            clickhouse,
            processor,
            health,
        };
        let ingest = Arc::new(tokio::sync::Mutex::new(ingest));
        let stop = shutdown.clone();
        supervise("ingest", shutdown.clone(), move || {
            let (ingest, stop) = (ingest.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ingest = ingest.lock().await;
                ingest.run(stop).await.map_err(anyhow::Error::from)
            })
        })
        .await;
        Ok(())
    } else {
        shutdown.cancelled().await;
        Ok(())
    };
    let mut result: anyhow::Result<()> = result;
    shutdown.cancel();
    if let Some(alerting) = alerting {
        // Alerting that failed makes the exit status non-zero (see alert::Prepared::spawn).
        match alerting.await {
            Ok(Err(err)) if result.is_ok() => result = Err(err),
            Ok(Err(err)) => warn!("alerting: {err:#}"),
            Err(err) => warn!("alerting task: {err}"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(detector) = detector {
        let _ = detector.await;
    }
    for reader in readers {
        let _ = reader.await;
    }
    match server.await {
        Ok(Err(err)) => warn!("http server: {err:#}"),
        Err(err) => warn!("http server task: {err}"),
        Ok(Ok(())) => {}
    }
    result
}

/// Runs a role until shutdown, starting it again (after a pause that doubles up to a minute)
/// whenever it stops with an error: one role's failure never ends the process while the
/// others could go on. While a role is down its readiness check fails, so `/readyz` says so.
async fn supervise<F>(role: &'static str, shutdown: CancellationToken, mut start: F)
where
    F: FnMut() -> tokio::task::JoinHandle<anyhow::Result<()>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        let err = match start().await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err,
            Err(panic) => anyhow::anyhow!("{role} task ended: {panic}"),
        };
        metrics::counter!("tripline_role_failures_total", "role" => role).increment(1);
        if shutdown.is_cancelled() {
            warn!("{role} stopped at shutdown: {err:#}");
            return;
        }
        error!(
            retry_in_s = pause.as_secs(),
            "{role} stopped: {err:#}; starting it again (the other roles go on)"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// `tripline migrate` (`--print`: the statements, not applied).
pub async fn migrate_only(config_path: Option<&Path>, print: bool) -> anyhow::Result<()> {
    let loaded = settings::load(config_path)?;
    let ch = &loaded.config.clickhouse;
    if print {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for statement in
            tripline_store::schema_statements(&ch.database, tripline_store::cluster(ch))?
        {
            // A reader that stops early (`| head`) is not an error.
            if writeln!(out, "{statement};\n").is_err() {
                break;
            }
        }
        return Ok(());
    }
    let applied = tripline_store::migrate(
        &loaded.clickhouse(),
        &ch.database,
        tripline_store::cluster(ch),
    )
    .await?;
    println!("applied migrations: {applied:?}");
    Ok(())
}

/// Applies migrations, retrying while ClickHouse is unreachable. `false` if shut down first.
async fn migrate_until_done(loaded: &Loaded, shutdown: &CancellationToken) -> bool {
    let client = loaded.clickhouse();
    let database = &loaded.config.clickhouse.database;
    let mut delay = Duration::from_millis(loaded.config.ingest.retry_initial_ms);
    loop {
        match tripline_store::migrate(
            &client,
            database,
            tripline_store::cluster(&loaded.config.clickhouse),
        )
        .await
        {
            Ok(applied) => {
                info!(?applied, database = %database, "schema up to date");
                return true;
            }
            Err(err) => {
                warn!(%err, retry_in_ms = delay.as_millis() as u64, "schema migration failed")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(loaded.config.ingest.retry_max_ms));
    }
}

/// An ingest worker of its own on `kafka`'s topics and group, storing through `clickhouse`,
/// running until `stop`: what `tripline bench` and `tripline evaluate` drive on scratch topics
/// and databases.
pub fn spawn_ingest(
    loaded: &Loaded,
    kafka: &tripline_core::config::KafkaConfig,
    clickhouse: &clickhouse::Client,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tripline_ingest::IngestError>>> {
    let mut ingest = Ingest {
        kafka: kafka.clone(),
        settings: loaded.config.ingest.clone(),
        clickhouse: clickhouse.clone(),
        processor: build_processor(loaded)?,
        health: Arc::new(IngestHealth::default()),
    };
    Ok(tokio::spawn(async move { ingest.run(stop).await }))
}

/// Ingest's processor as the config describes it (fingerprint secret, IP databases, prices).
pub fn build_processor(loaded: &Loaded) -> anyhow::Result<Processor> {
    let config = &loaded.config;
    let secret = loaded.fingerprint_secret()?;
    Ok(Processor::from_config(
        &config.enrich,
        &config.ingest,
        &secret,
        |path| loaded.resolve(path),
    )?)
}

/// The HTTP collector's routes, when `[collector.token_env]` names at least one source.
fn build_collector(loaded: &Loaded) -> anyhow::Result<Option<axum::Router>> {
    let config = &loaded.config;
    let fingerprinter = Fingerprinter::new(&loaded.fingerprint_secret()?)?;
    let collector = tripline_collector::Collector::new(
        &config.collector,
        &config.sources,
        &config.kafka,
        &config.ingest,
        fingerprinter,
        tripline_kafka::process_env,
    )?;
    if collector.is_some() {
        info!(sources = ?config.collector.token_env.keys().collect::<Vec<_>>(), "http collector enabled");
    }
    Ok(collector.map(|c| c.router()))
}

/// A reader for each `[[sources]]` entry with a `kafka_topic`.
fn build_source_readers(
    loaded: &Loaded,
) -> anyhow::Result<Vec<tripline_collector::sources::SourceReader>> {
    let config = &loaded.config;
    if !config.sources.iter().any(|s| s.kafka_topic.is_some()) {
        return Ok(Vec::new());
    }
    let fingerprinter = Fingerprinter::new(&loaded.fingerprint_secret()?)?;
    Ok(tripline_collector::sources::SourceReader::all(
        &config.sources,
        &config.kafka,
        &config.ingest,
        &fingerprinter,
        tripline_kafka::process_env,
    )?)
}

/// SIGINT or SIGTERM starts an orderly shutdown; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    warn!(%err, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                info!("shutdown requested: finishing the current batch");
                shutdown.cancel();
            } else {
                warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}
