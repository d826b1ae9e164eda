//! `tripline backtest`: replays stored history from ClickHouse through the detectors twice, with
//! a candidate config and with the running one, and reports which alerts the candidate would add,
//! remove or keep, per detector and entity. This is how thresholds are tuned before production.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tripline_detector::replay::{replay_each, Firing, Span};

use crate::settings;

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// The candidate config file (required): its [detect] section is what is tried, and the
    /// ClickHouse to read history from comes from it too.
    #[arg(long, short)]
    config: PathBuf,
    /// The running config file to compare with (default: TRIPLINE_CONFIG, else the built-in
    /// defaults).
    #[arg(long, env = "TRIPLINE_CONFIG")]
    running: Option<PathBuf>,
    /// Start of the compared history (RFC 3339, e.g. 2026-11-25T00:00:00Z; required).
    #[arg(long)]
    from: String,
    /// End of the compared history (RFC 3339; default: now).
    #[arg(long)]
    to: Option<String>,
    /// Minutes replayed before `--from` only to warm the models (default: detect.history_hours).
    #[arg(long)]
    warmup_minutes: Option<u32>,
    /// Also write the comparison as JSON here (`-` for standard output, then no table; default:
    /// the table only).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// An alert identity: detector plus entity labels (the fingerprint's inputs, readable).
type AlertKey = (String, String);

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    detector: String,
    entity: String,
    change: &'static str,
    candidate_firings: usize,
    running_firings: usize,
    first_at: String,
    severity: String,
    summary: String,
}

pub async fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let candidate = settings::load(Some(&args.config))?;
    let running = settings::load(args.running.as_deref())?;
    let parse = |text: &str, flag: &str| {
        tripline_core::time::parse_rfc3339_ms(text)
            .map(|ms| (ms / 1000) as u32)
            .with_context(|| format!("{flag} {text:?} is not RFC 3339"))
    };
    let from = parse(&args.from, "--from")?;
    let to = match &args.to {
        Some(text) => parse(text, "--to")?,
        None => {
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()) as u32
        }
    };
    if to <= from {
        bail!("--to must be after --from");
    }
    let warmup_s = args
        .warmup_minutes
        .map_or(candidate.config.detect.history_hours as u32 * 3600, |m| {
            m * 60
        });
    let clickhouse = candidate.clickhouse();
    let quiet = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");

    // Both configs replay side by side from the same reads.
    let span = Span {
        from_s: from.saturating_sub(warmup_s),
        active_from_s: from,
        to_s: to,
        step_s: 60,
    };
    let configs = vec![
        candidate.config.detect.clone(),
        running.config.detect.clone(),
    ];
    let mut last_percent = u32::MAX;
    let results = replay_each(&clickhouse, configs, span, |done, total| {
        let percent = done * 100 / total.max(1);
        if percent / 10 != last_percent / 10 || done == total {
            last_percent = percent;
            eprint!(
                "\rreplaying {}/{} minutes ({percent} %)",
                done / 60,
                total / 60
            );
            let _ = std::io::stderr().flush();
        }
    })
    .await
    .context("replaying stored history through the detectors")?;
    eprintln!();
    let rows = compare(&results[0], &results[1]);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "from": args.from, "to": tripline_core::time::format_ms(i64::from(to) * 1000),
            "summary": summary(&rows), "alerts": rows,
        }))?;
        if quiet {
            println!("{json}");
            return Ok(());
        }
        std::fs::write(path, json)?;
    }
    print_table(&rows);
    Ok(())
}

fn key(firing: &Firing) -> AlertKey {
    let entity = firing
        .alert
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "detector")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    (firing.alert.detector.clone(), entity)
}

fn compare(candidate: &[Firing], running: &[Firing]) -> Vec<Row> {
    let mut by_key: BTreeMap<AlertKey, (Vec<&Firing>, Vec<&Firing>)> = BTreeMap::new();
    for f in candidate {
        by_key.entry(key(f)).or_default().0.push(f);
    }
    for f in running {
        by_key.entry(key(f)).or_default().1.push(f);
    }
    by_key
        .into_iter()
        .map(|((detector, entity), (c, r))| {
            let change = match (c.is_empty(), r.is_empty()) {
                (false, true) => "added",
                (true, false) => "removed",
                _ => "unchanged",
            };
            let example = c.first().or(r.first()).expect("one side has a firing");
            Row {
                detector,
                entity,
                change,
                candidate_firings: c.len(),
                running_firings: r.len(),
                first_at: tripline_core::time::format_ms(i64::from(example.at_s) * 1000),
                severity: example.alert.severity.as_str().to_owned(),
                summary: example.alert.summary.clone(),
            }
        })
        .collect()
}

fn summary(rows: &[Row]) -> BTreeMap<String, BTreeMap<&'static str, usize>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    for row in rows {
        *out.entry(row.detector.clone())
            .or_default()
            .entry(row.change)
            .or_default() += 1;
    }
    out
}

fn print_table(rows: &[Row]) {
    println!("| detector | added | removed | unchanged |");
    println!("|---|---|---|---|");
    for (detector, counts) in summary(rows) {
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        println!(
            "| {detector} | {} | {} | {} |",
            n("added"),
            n("removed"),
            n("unchanged")
        );
    }
    println!();
    for row in rows.iter().filter(|r| r.change != "unchanged") {
        println!(
            "{:<9} {:<13} {:<40} first {} — {}",
            row.change, row.detector, row.entity, row.first_at, row.summary
        );
    }
    let unchanged = rows.iter().filter(|r| r.change == "unchanged").count();
    println!("({unchanged} alerts unchanged)");
}
