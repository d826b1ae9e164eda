//! `tripline`: one binary, one subcommand per role. See `tripline --help`.

mod alert;
mod backtest;
mod bench;
mod detect;
mod evaluate;
mod evaluate_summary;
mod live_config;
mod roles;
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
    long_about = "Monitoring and anomaly alerting for LLM API traffic.\n\n\
                  Tripline reads your gateway's request logs and its provider attempt logs from \
                  Kafka (or over HTTP, e.g. LiteLLM's generic_api callback), stores them in \
                  ClickHouse, and watches them for spend spikes, leaked API keys, retry storms \
                  and cross-region access. Alerts go to Kafka and ClickHouse and, with \
                  [alerting], to webhooks, Slack and email. Every setting lives in one TOML \
                  file (see tripline.example.toml; every key is optional); endpoints can be \
                  overridden from the environment (TRIPLINE_KAFKA_BROKERS, \
                  TRIPLINE_CLICKHOUSE_URL, TRIPLINE_CLICKHOUSE_DATABASE, TRIPLINE_CLICKHOUSE_CLUSTER, \
                  TRIPLINE_CLICKHOUSE_USER, TRIPLINE_LISTEN) and secrets come only from the \
                  environment (TRIPLINE_FINGERPRINT_SECRET and the variables the file names). \
                  Logs are structured on stderr: RUST_LOG filters them, \
                  TRIPLINE_LOG_FORMAT=json makes them JSON lines.",
    after_help = "Examples:\n  \
        tripline check-config --config tripline.toml\n  \
        tripline run --config tripline.toml                 # everything in one process\n  \
        tripline ingest -c tripline.toml                    # scale ingest out: one per few partitions\n  \
        tripline simulate --rate 200 --duration-s 600       # realistic traffic into Kafka\n  \
        tripline backtest --config candidate.toml --running tripline.toml --from 2026-11-25T00:00:00Z\n\n\
        `tripline <command> --help` describes each command.",
    after_long_help = "Examples:\n  \
        tripline check-config --config tripline.toml\n      \
            validate a config file: every problem with file:line:column, key and a hint\n  \
        tripline run --config tripline.toml\n      \
            every role in one process, HTTP server on server.listen (default 127.0.0.1:9898)\n  \
        tripline ingest -c tripline.toml\n      \
            ingest only; start more with the same kafka.ingest_group_id to scale out\n  \
        tripline detect -c shard0.toml\n      \
            detectors only; detect.shard_index/shard_count split the keys between processes\n  \
        tripline simulate --rate 200 --duration-s 600\n      \
            realistic traffic into Kafka (paced to real time; --fast to send at once)\n  \
        tripline backtest --config candidate.toml --running tripline.toml --from 2026-11-25T00:00:00Z\n      \
            which alerts a threshold change would add or remove on stored history\n\n\
        `tripline <command> --help` describes each command."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// The TOML config file (see tripline.example.toml); relative paths inside it are relative
    /// to its directory. Without it, the documented defaults (plus environment overrides).
    #[arg(long, short, env = "TRIPLINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the statements for the configured database (and cluster) instead of applying
    /// them, one per paragraph, each ending with `;`: to review them, or to run them by hand.
    #[arg(long)]
    print: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process: ingest, the detectors, the HTTP collector (when
    /// `[collector.token_env]` names a source) and alerting (when `[alerting]` names a
    /// receiver), with the HTTP server.
    ///
    /// The HTTP server listens on `server.listen` (default 127.0.0.1:9898; TRIPLINE_LISTEN
    /// overrides it) and serves /healthz, /readyz and /metrics. Migrations are applied at
    /// start-up. SIGTERM or SIGINT stops it in order (the open batch is inserted and committed);
    /// a second signal exits at once. The detectors and alerting re-read the config file when it
    /// changes or on SIGHUP.
    Run(ConfigArg),
    /// Run ingest only: Kafka → fingerprint secrets, validate, enrich, deduplicate →
    /// ClickHouse; refused events → the dead-letter topic. Also serves the HTTP collector when
    /// `[collector.token_env]` names a source.
    ///
    /// Start several with the same `kafka.ingest_group_id` to share the topics' partitions.
    Ingest(ConfigArg),
    /// Run the detectors only: ClickHouse rollups → alerts on `kafka.alerts_topic` and in the
    /// ClickHouse `alerts` table.
    ///
    /// Start several with `detect.shard_count = N` and `detect.shard_index = 0..N-1` to split
    /// the API keys between them. The config file is re-read when it changes or on SIGHUP.
    Detect(ConfigArg),
    /// Run the alerting service only: `kafka.alerts_topic` → routing, grouping, silences →
    /// webhook, Slack and email notifications.
    ///
    /// Its state lives in `[alerting] state_dir` (default .run/alerting): run one alerting
    /// process per state directory. Its API is on when TRIPLINE_ALERTING_API_TOKEN is set.
    Alert(ConfigArg),
    /// Apply the ClickHouse schema migrations that are not applied yet, and exit.
    ///
    /// Applied versions are recorded in the `schema_migrations` table; the long-running
    /// commands also apply them at start-up. With `clickhouse.cluster`, on every node of that
    /// cluster.
    Migrate(MigrateArgs),
    /// Check a config file and print every problem with its place and a hint.
    ///
    /// Each problem is printed on stderr as `FILE:LINE:COLUMN: KEY: what is wrong` followed by
    /// a `  hint:` line (the valid range or choices, the default, or a close spelling for an
    /// unknown key). Values overridden from the environment (TRIPLINE_LISTEN, ...) are checked
    /// too and reported with the variable as their place. Problems with this machine's
    /// environment (a secret not set, a database file missing) are printed as warnings and do
    /// not fail the check.
    ///
    /// Exit status: 0 when the file is valid (warnings may be printed), 1 when it is invalid or
    /// cannot be read, 2 for a bad command line.
    CheckConfig {
        /// The file to check.
        #[arg(long, short, env = "TRIPLINE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Produce realistic gateway and provider traffic (from real request traces) to Kafka,
    /// optionally with labelled incidents and their ground truth.
    Simulate(simulate::SimulateArgs),
    /// Measure sustained Kafka → ClickHouse throughput against the raw broker and insert rates
    /// (on scratch topics and a scratch database; see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Score the detectors on simulated traffic with labelled incidents (recall, precision,
    /// time to detect), through the real pipeline on scratch topics and a scratch database.
    Evaluate(evaluate::EvaluateArgs),
    /// Pool the JSONs of several `tripline evaluate --json` runs (one per seed): per detector
    /// and per incident class, recall and precision with 95 % Wilson intervals, time to detect
    /// p50 and p95 with 95 % bootstrap intervals, and whether a benign event alerted.
    ///
    /// `scripts/eval-seeds.sh` runs the seeds and this summary.
    EvaluateSummary(evaluate_summary::EvaluateSummaryArgs),
    /// Replay stored history through the detectors with a candidate config and the running one,
    /// and report which alerts the candidate would add, remove or keep.
    ///
    /// Nothing is published: no alert reaches Kafka, ClickHouse or a receiver. Check the
    /// candidate first with `tripline check-config`.
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
            Command::Migrate(args) => {
                roles::migrate_only(args.config.config.as_deref(), args.print).await
            }
            Command::Simulate(args) => simulate::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Evaluate(args) => evaluate::run(args).await,
            Command::EvaluateSummary(args) => evaluate_summary::run(args),
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

/// `tripline check-config`: errors on stderr and exit 1, or warnings and `FILE: ok` and exit 0.
fn check_config(path: &std::path::Path) -> ExitCode {
    match settings::load(Some(path)) {
        Ok(loaded) => {
            for warning in loaded.environment_problems() {
                eprintln!("warning: {warning}");
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
