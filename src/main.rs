//! `tripline`: one binary, one subcommand per role. See `tripline --help`.

mod alert;
mod backtest;
mod bench;
mod detect;
mod evaluate;
mod roles;
mod server;
mod settings;
mod simulate;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The decode path allocates a few short strings per event; mimalloc handles that churn across
/// threads with far less CPU than glibc's malloc (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tripline",
    version,
    about = "Monitoring and anomaly alerting for LLM API traffic",
    long_about = "Tripline reads gateway request logs and provider attempt logs from Kafka, stores \
                  them in ClickHouse, and watches them for spend spikes, leaked keys, retry storms \
                  and cross-region access."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// TOML config file (see tripline.example.toml). Without it, the documented defaults.
    #[arg(long, short, env = "TRIPLINE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role (ingest, detectors, alerting when `[alerting]` names a receiver) with the HTTP server (/healthz, /readyz, /metrics).
    Run(ConfigArg),
    /// Run ingest only: Kafka → validate, enrich, dedup → ClickHouse; bad events → DLQ.
    Ingest(ConfigArg),
    /// Run the detector workers only: rollups in ClickHouse → findings → tripline.alerts.
    Detect(ConfigArg),
    /// Run the alerting service only: tripline.alerts → routing, grouping, silences →
    /// email, webhook and Slack notifications (state in `[alerting] state_dir`).
    Alert(ConfigArg),
    /// Apply the ClickHouse schema migrations and exit.
    Migrate(ConfigArg),
    /// Check a config file and print every problem with its line, column and a hint.
    CheckConfig {
        /// The file to check.
        #[arg(long, short, env = "TRIPLINE_CONFIG")]
        config: PathBuf,
    },
    /// Produce realistic gateway and provider traffic (from real traces) to Kafka.
    Simulate(simulate::SimulateArgs),
    /// Measure sustained Kafka → ClickHouse throughput against the raw broker and insert rates.
    Bench(bench::BenchArgs),
    /// Score the detectors on simulated traffic with labelled incidents (recall, precision,
    /// time to detect), through the real pipeline.
    Evaluate(evaluate::EvaluateArgs),
    /// Replay stored history through the detectors with a candidate config and the running one,
    /// and report which alerts would be added, removed or kept.
    Backtest(backtest::BacktestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig { config } = &cli.command {
        return check_config(config);
    }
    telemetry::init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let roles = roles::Roles {
                    ingest: true,
                    detect: true,
                    alert: settings::load(args.config.as_deref())?
                        .config
                        .alerting
                        .enabled(),
                };
                roles::serve(args.config.as_deref(), roles).await
            }
            Command::Ingest(args) => {
                let roles = roles::Roles {
                    ingest: true,
                    detect: false,
                    alert: false,
                };
                roles::serve(args.config.as_deref(), roles).await
            }
            Command::Detect(args) => {
                let roles = roles::Roles {
                    ingest: false,
                    detect: true,
                    alert: false,
                };
                roles::serve(args.config.as_deref(), roles).await
            }
            Command::Alert(args) => {
                let roles = roles::Roles {
                    ingest: false,
                    detect: false,
                    alert: true,
                };
                roles::serve(args.config.as_deref(), roles).await
            }
            Command::Migrate(args) => roles::migrate_only(args.config.as_deref()).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Evaluate(args) => evaluate::run(args).await,
            Command::Backtest(args) => backtest::run(args).await,
            Command::CheckConfig { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match settings::load(Some(path)) {
        Ok(loaded) => {
            let mut warnings = Vec::new();
            if let Err(err) = loaded.fingerprint_secret() {
                warnings.push(format!("{err:#}"));
            }
            for db in [
                &loaded.config.enrich.country_db,
                &loaded.config.enrich.asn_db,
            ]
            .into_iter()
            .flatten()
            {
                if !loaded.resolve(db).exists() {
                    warnings.push(format!("ip database {db} does not exist"));
                }
            }
            for warning in &warnings {
                println!("warning: {warning}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
