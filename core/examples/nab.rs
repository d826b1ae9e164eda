//! Runs Tripline's spend model as a streaming anomaly scorer over the NAB corpus.
//!
//! ```text
//! cargo run --release -p tripline-core --example nab -- DATA_DIR OUT_DIR [--config JSON] [--onset ROWS]
//! ```
//!
//! For every `DATA_DIR/<folder>/<file>.csv` (`timestamp,value`) it writes
//! `OUT_DIR/<folder>/<file>.csv` (`timestamp,value,anomaly_score`), which `nabscore.py` scores.
//! Each row is assessed by a model that has seen only the rows before it, then folded in.
//!
//! NAB series are not spend, so the runner uses the same [`SpendModel`] with generic settings
//! (no USD or relative floors, drops scored as well as rises), given below in [`nab_config`];
//! `--config` merges JSON over them, e.g. `--config '{"half_life_windows": 200}'`.
//!
//! Onset only: NAB counts the earliest detection in each anomaly window and charges every
//! detection outside one, and an alerting pipeline also pages once per incident, not once per
//! window of it. So a row's score is reported only when it is higher than every score of the
//! previous `--onset` rows (default 40% of a NAB window's typical width); otherwise 0. For any
//! threshold the scorer picks, that keeps the first crossing and drops its continuation. It uses
//! only earlier rows, like the model.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDateTime;
use tripline_core::models::{hour_of_week, SpendModel, SpendModelConfig, SpendParams};

/// The generic-series settings. Why each differs from the spend defaults: NAB values are not
/// USD (no floors), anomalies include drops (two-sided), NAB series are 1,000-16,000 rows of
/// 5-minute data (a longer memory in windows, hour-of-day shape learnt within a day), and NAB
/// rewards only the onset of an anomaly, so the baseline adapts at full speed after it
/// (`anomaly_fold` 1: 59.0 Standard, against 57.6 with the spend default of 0.1).
fn nab_config() -> SpendModelConfig {
    SpendModelConfig {
        half_life_windows: 5000.0,
        tail_probability: 1e-4,
        tail_dof: 30.0,
        min_abs_usd: 0.0,
        min_rel_increase: 0.0,
        warmup_windows: 50,
        seasonality: true,
        season_weeks: true,
        season_half_life_windows: 24.0,
        season_prior_windows: 3.0,
        season_min_windows: 0,
        anomaly_fold: 1.0,
        two_sided: true,
        calibration_half_life_windows: 5000.0,
        min_sigma_rel: 0.0,
    }
}

struct Args {
    data: PathBuf,
    out: PathBuf,
    config: SpendModelConfig,
    onset_rows: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut pos = Vec::new();
    let mut overrides = None;
    let mut onset_rows = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => overrides = Some(it.next().ok_or("--config needs a JSON object")?),
            "--onset" => {
                let v = it.next().ok_or("--onset needs a number of rows")?;
                onset_rows = Some(v.parse().map_err(|e| format!("--onset {v}: {e}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => pos.push(a),
        }
    }
    let [data, out] =
        <[String; 2]>::try_from(pos).map_err(|_| "expected DATA_DIR OUT_DIR".to_string())?;
    let mut config = nab_config();
    if let Some(json) = overrides {
        let mut base = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        let over: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("--config: {e}"))?;
        let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) else {
            return Err("--config must be a JSON object".into());
        };
        b.extend(o.clone());
        config = serde_json::from_value(base).map_err(|e| format!("--config: {e}"))?;
    }
    Ok(Args {
        data: data.into(),
        out: out.into(),
        config,
        onset_rows,
    })
}

fn parse_ts(s: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .map_err(|e| format!("timestamp {s:?}: {e}"))
}

/// The NAB score of a row: a monotone map of the model's tail probability that, unlike
/// `Assessment::score` (`1 - 2p`), does not round to exactly 1 for p below 1e-16. NAB picks
/// one threshold for the whole corpus among the scores written, so ties at 1.0 would make the
/// most extreme rows of every file indistinguishable. `s = -ln p`, score `s / (1 + s)`.
fn surprise_score(p_value: f64) -> f64 {
    let s = -p_value.max(f64::MIN_POSITIVE).ln();
    (s / (1.0 + s)).clamp(0.0, 1.0)
}

/// Scores one series; returns the CSV text.
fn score_file(text: &str, params: &SpendParams, onset_rows: usize) -> Result<String, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, v) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: no comma", i + 1))?;
        let value: f64 = v
            .trim()
            .parse()
            .map_err(|e| format!("line {}: {v:?}: {e}", i + 1))?;
        let how = hour_of_week(parse_ts(ts.trim())?.and_utc().timestamp_millis());
        rows.push((ts.trim(), value, how));
    }
    let mut model = SpendModel::new(params);
    let mut recent: Vec<f64> = Vec::with_capacity(rows.len());
    let mut out = String::from("timestamp,value,anomaly_score\n");
    for (i, &(ts, value, how)) in rows.iter().enumerate() {
        let a = model.assess(params, value, 1.0, how);
        let raw = surprise_score(a.p_value);
        if std::env::var("NAB_DEBUG")
            .is_ok_and(|r| r.parse::<usize>().is_ok_and(|r| r.abs_diff(i) < 3))
        {
            eprintln!(
                "{i} {ts} {value} exp={} up={} p={} how={how}",
                a.expected, a.upper, a.p_value
            );
        }
        let from = i.saturating_sub(onset_rows);
        let prev_max = recent[from..i].iter().copied().fold(0.0, f64::max);
        let score = if raw > prev_max { raw } else { 0.0 };
        recent.push(raw);
        model.update(params, value, how);
        writeln!(out, "{ts},{value},{score}").expect("writing to a String");
    }
    Ok(out)
}

fn run(args: &Args) -> Result<usize, String> {
    let params = args.config.validate().map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = Vec::new();
    for folder in fs::read_dir(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))? {
        let folder = folder.map_err(|e| e.to_string())?.path();
        if !folder.is_dir() {
            continue;
        }
        for f in fs::read_dir(&folder).map_err(|e| e.to_string())? {
            let f = f.map_err(|e| e.to_string())?.path();
            if f.extension().is_some_and(|e| e == "csv") {
                files.push(f);
            }
        }
    }
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(&args.data).map_err(|e| e.to_string())?;
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let n = text.lines().count().saturating_sub(1);
        // A NAB window is about 10% of the file, split among 1-4 windows: 40% of 5% of n.
        let onset = args.onset_rows.unwrap_or((n / 50).max(1));
        let csv = score_file(&text, &params, onset).map_err(|e| format!("{}: {e}", f.display()))?;
        let dest = args.out.join(rel);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::write(&dest, csv).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(files.len())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: nab DATA_DIR OUT_DIR [--config JSON] [--onset ROWS]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(n) => {
            eprintln!(
                "nab: scored {n} files into {} with {}",
                args.out.display(),
                serde_json::to_string(&args.config).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nab: {e}");
            ExitCode::FAILURE
        }
    }
}
