//! `tripline evaluate-summary`: pools the JSONs of several `tripline evaluate --json` runs (one
//! per seed) and reports, per detector and per incident class, recall and precision with 95 %
//! Wilson intervals and time to detect (p50, p95) with 95 % percentile-bootstrap intervals. One
//! seed flatters or slanders a detector by luck; twenty give the luck a size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tripline_simulate::IncidentKind;

#[derive(clap::Args, Debug)]
pub struct EvaluateSummaryArgs {
    /// JSON files written by `tripline evaluate --json`, one per seed.
    #[arg(required = true, value_name = "JSON")]
    files: Vec<PathBuf>,
    /// Print Markdown tables (for BENCHMARKS.md) instead of aligned text.
    #[arg(long)]
    markdown: bool,
}

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;
/// Bootstrap resamples per interval, and the fixed seed that makes the output reproducible.
const RESAMPLES: usize = 1000;
const BOOTSTRAP_SEED: u64 = 20_251_111;

pub fn run(args: EvaluateSummaryArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &args.files {
        runs.push(read(path)?);
    }
    let pooled = pool(&runs)?;
    print!("{}", pooled.render(args.markdown));
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<(PathBuf, EvalJson)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let eval: EvalJson = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a `tripline evaluate --json` file", path.display()))?;
    Ok((path.to_owned(), eval))
}

// ---- the evaluate JSON (what of it is pooled) ----

#[derive(Debug, Deserialize)]
struct EvalJson {
    /// Absent in files written before the run was recorded.
    #[serde(default)]
    run: Option<RunJson>,
    detectors: BTreeMap<String, DetectorJson>,
    incidents: Vec<IncidentJson>,
    #[serde(default)]
    false_alerts: Vec<FalseAlertJson>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct RunJson {
    seed: u64,
    hours: f64,
    /// Hours of history before them (absent before there was the option: none).
    #[serde(default)]
    history_hours: f64,
    rate: f64,
    keys: usize,
    step_s: u32,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    detect_config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct DetectorJson {
    incidents: usize,
    detected: usize,
    alerts: usize,
    true_alerts: usize,
    ttd_s: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct IncidentJson {
    kind: String,
    detected: bool,
    ttd_s: Option<f64>,
    /// Benign incidents only; absent in older files (then unknown).
    #[serde(default)]
    benign_alerts: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct FalseAlertJson {
    detector: String,
}

// ---- statistics ----

/// The 95 % Wilson score interval of `successes` out of `trials`; `None` without trials.
pub fn wilson(successes: usize, trials: usize) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The nearest-rank percentile (`p` in 0..=1): the smallest value with at least `p` of the
/// values at or below it; `None` for no values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The 95 % percentile-bootstrap interval of [`percentile`]`(values, p)`: `resamples` resamples
/// of the values with replacement from a ChaCha8 stream seeded with `seed`, and the 2.5th and
/// 97.5th percentiles of their statistics. Deterministic for a seed.
pub fn bootstrap_percentile(
    values: &[f64],
    p: f64,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if values.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample = vec![0.0; values.len()];
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for v in sample.iter_mut() {
            *v = values[rng.random_range(0..values.len())];
        }
        stats.push(percentile(&sample, p)?);
    }
    Some((percentile(&stats, 0.025)?, percentile(&stats, 0.975)?))
}

// ---- pooling ----

#[derive(Debug, Default, PartialEq)]
struct DetectorPool {
    incidents: usize,
    detected: usize,
    alerts: usize,
    true_alerts: usize,
    ttd_s: Vec<f64>,
}

#[derive(Debug, Default, PartialEq)]
struct ClassPool {
    incidents: usize,
    detected: usize,
    ttd_s: Vec<f64>,
    /// Benign incidents with at least one false alert about them, and those not known (older
    /// files).
    alerted: usize,
    unknown: usize,
}

#[derive(Debug)]
struct Pooled {
    /// Per file: its path, its run (if recorded), incidents, detected, false alerts.
    runs: Vec<(PathBuf, Option<RunJson>, usize, usize, usize)>,
    detectors: BTreeMap<String, DetectorPool>,
    classes: BTreeMap<IncidentKind, ClassPool>,
    warnings: Vec<String>,
}

fn pool(runs: &[(PathBuf, EvalJson)]) -> anyhow::Result<Pooled> {
    let mut detectors: BTreeMap<String, DetectorPool> = BTreeMap::new();
    let mut classes: BTreeMap<IncidentKind, ClassPool> = BTreeMap::new();
    let mut per_run = Vec::new();
    let mut false_by_detector: BTreeMap<String, usize> = BTreeMap::new();
    for (path, eval) in runs {
        for (name, d) in &eval.detectors {
            let pool = detectors.entry(name.clone()).or_default();
            pool.incidents += d.incidents;
            pool.detected += d.detected;
            pool.alerts += d.alerts;
            pool.true_alerts += d.true_alerts;
            pool.ttd_s.extend(&d.ttd_s);
        }
        let (mut incidents, mut detected) = (0, 0);
        for incident in &eval.incidents {
            let kind = IncidentKind::from_str(&incident.kind)
                .with_context(|| format!("{}", path.display()))?;
            let class = classes.entry(kind).or_default();
            class.incidents += 1;
            if kind.is_benign() {
                match incident.benign_alerts {
                    Some(0) => {}
                    Some(_) => class.alerted += 1,
                    None => class.unknown += 1,
                }
                continue;
            }
            incidents += 1;
            if incident.detected {
                detected += 1;
                class.detected += 1;
                match incident.ttd_s {
                    Some(ttd) => class.ttd_s.push(ttd),
                    None => bail!("{}: a detected {kind} without ttd_s", path.display()),
                }
            }
        }
        for alert in &eval.false_alerts {
            *false_by_detector.entry(alert.detector.clone()).or_default() += 1;
        }
        per_run.push((
            path.clone(),
            eval.run.clone(),
            incidents,
            detected,
            eval.false_alerts.len(),
        ));
    }
    let mut warnings = differences(&per_run);
    for (name, d) in &detectors {
        let listed = false_by_detector.get(name).copied().unwrap_or(0);
        if listed != d.alerts - d.true_alerts.min(d.alerts) {
            warnings.push(format!(
                "{name}: {} alerts, {} true, but {listed} false alerts listed",
                d.alerts, d.true_alerts
            ));
        }
    }
    Ok(Pooled {
        runs: per_run,
        detectors,
        classes,
        warnings,
    })
}

/// What makes the pooled runs not one experiment: a run without its settings, a seed pooled
/// twice, settings or config or revision that differ.
fn differences(runs: &[(PathBuf, Option<RunJson>, usize, usize, usize)]) -> Vec<String> {
    let mut warnings = Vec::new();
    let known: Vec<&RunJson> = runs.iter().filter_map(|r| r.1.as_ref()).collect();
    let unknown = runs.len() - known.len();
    if unknown > 0 {
        warnings.push(format!(
            "{unknown} file(s) do not record their run (seed, settings): written by an older tripline evaluate"
        ));
    }
    let mut seeds: Vec<u64> = known.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    let before = seeds.len();
    seeds.dedup();
    if seeds.len() < before {
        warnings.push(format!(
            "{} seed(s) pooled more than once",
            before - seeds.len()
        ));
    }
    if let Some(first) = known.first() {
        let differs = |name: &str, same: &dyn Fn(&RunJson) -> bool| {
            (!known.iter().all(|r| same(r))).then(|| name.to_owned())
        };
        let fields: Vec<String> = [
            differs("hours", &|r| r.hours == first.hours),
            differs("history_hours", &|r| r.history_hours == first.history_hours),
            differs("rate", &|r| r.rate == first.rate),
            differs("keys", &|r| r.keys == first.keys),
            differs("step_s", &|r| r.step_s == first.step_s),
            differs("revision", &|r| r.revision == first.revision),
            differs("detect_config", &|r| r.detect_config == first.detect_config),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !fields.is_empty() {
            warnings.push(format!(
                "the runs differ in {}: they are not one experiment",
                fields.join(", ")
            ));
        }
    }
    warnings
}

// ---- output ----

fn ratio(k: usize, n: usize) -> String {
    match wilson(k, n) {
        Some((lo, hi)) => format!("{:.2} [{lo:.2}, {hi:.2}]", k as f64 / n as f64),
        None => "-".to_owned(),
    }
}

fn ttd(values: &[f64], p: f64) -> String {
    match (
        percentile(values, p),
        bootstrap_percentile(values, p, RESAMPLES, BOOTSTRAP_SEED),
    ) {
        (Some(v), Some((lo, hi))) => format!("{v:.0} [{lo:.0}, {hi:.0}]"),
        _ => "-".to_owned(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out += &format!("| {} |\n", headers.join(" | "));
        out += &format!("|{}\n", "---|".repeat(headers.len()));
        for row in rows {
            out += &format!("| {} |\n", row.join(" | "));
        }
        return out;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    out += &line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

impl Pooled {
    fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        let seeds: Vec<String> = self
            .runs
            .iter()
            .map(|r| r.1.as_ref().map_or("?".to_owned(), |r| r.seed.to_string()))
            .collect();
        out += &format!(
            "tripline evaluate-summary: {} runs pooled, seeds {}\n",
            self.runs.len(),
            seeds.join(", ")
        );
        if let Some(run) = self.runs.iter().find_map(|r| r.1.as_ref()) {
            out += &format!(
                "settings: {} h after {} h of history, at {} requests/s, {} keys, step {} s, \
                 revision {}\n",
                run.hours,
                run.history_hours,
                run.rate,
                run.keys,
                run.step_s,
                run.revision.as_deref().unwrap_or("unknown")
            );
        }
        for warning in &self.warnings {
            out += &format!("WARNING: {warning}\n");
        }
        out += "95 % intervals: Wilson for recall and precision (alerts are not independent \
                trials: the precision interval is optimistic), percentile bootstrap (1,000 \
                resamples, fixed seed) for the time to detect (s, nearest-rank percentiles).\n\n";

        let rows: Vec<Vec<String>> = self
            .detectors
            .iter()
            .map(|(name, d)| {
                vec![
                    name.clone(),
                    d.incidents.to_string(),
                    d.detected.to_string(),
                    ratio(d.detected, d.incidents),
                    d.alerts.to_string(),
                    d.true_alerts.to_string(),
                    ratio(d.true_alerts, d.alerts),
                    ttd(&d.ttd_s, 0.5),
                    ttd(&d.ttd_s, 0.95),
                ]
            })
            .collect();
        out += "Per detector\n\n";
        out += &table(
            &[
                "detector",
                "incidents",
                "detected",
                "recall [95 %]",
                "alerts",
                "true alerts",
                "precision [95 %]",
                "TTD p50 s [95 %]",
                "TTD p95 s [95 %]",
            ],
            &rows,
            markdown,
        );

        let rows: Vec<Vec<String>> = self
            .classes
            .iter()
            .filter(|(kind, _)| !kind.is_benign())
            .map(|(kind, c)| {
                vec![
                    kind.as_str().to_owned(),
                    kind.detector().map_or("-", |d| d.as_str()).to_owned(),
                    c.incidents.to_string(),
                    c.detected.to_string(),
                    ratio(c.detected, c.incidents),
                    ttd(&c.ttd_s, 0.5),
                    ttd(&c.ttd_s, 0.95),
                ]
            })
            .collect();
        out += "\nPer incident class\n\n";
        out += &table(
            &[
                "class",
                "detector",
                "incidents",
                "detected",
                "recall [95 %]",
                "TTD p50 s [95 %]",
                "TTD p95 s [95 %]",
            ],
            &rows,
            markdown,
        );

        let rows: Vec<Vec<String>> = self
            .classes
            .iter()
            .filter(|(kind, _)| kind.is_benign())
            .map(|(kind, c)| {
                let known = c.incidents - c.unknown;
                vec![
                    kind.as_str().to_owned(),
                    c.incidents.to_string(),
                    if c.unknown > 0 {
                        format!("{} ({} unknown)", c.alerted, c.unknown)
                    } else {
                        c.alerted.to_string()
                    },
                    ratio(c.alerted, known),
                ]
            })
            .collect();
        out += "\nBenign classes (must not alert)\n\n";
        out += &table(
            &["class", "incidents", "alerted", "alerted share [95 %]"],
            &rows,
            markdown,
        );

        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|(path, run, incidents, detected, false_alerts)| {
                vec![
                    run.as_ref().map_or("?".to_owned(), |r| r.seed.to_string()),
                    incidents.to_string(),
                    detected.to_string(),
                    false_alerts.to_string(),
                    path.display().to_string(),
                ]
            })
            .collect();
        out += "\nPer run\n\n";
        out += &table(
            &["seed", "incidents", "detected", "false alerts", "file"],
            &rows,
            markdown,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: (f64, f64), expected: (f64, f64)) -> bool {
        (actual.0 - expected.0).abs() < 5e-5 && (actual.1 - expected.1).abs() < 5e-5
    }

    #[test]
    fn wilson_matches_published_intervals() {
        // The textbook cases, and Newcombe (1998), "Two-sided confidence intervals for the
        // single proportion", Table I, method 3 (Wilson score without continuity correction).
        let cases = [
            ((0, 10), (0.0, 0.2775)),
            ((10, 10), (0.7225, 1.0)),
            ((5, 10), (0.2366, 0.7634)),
            ((81, 263), (0.2553, 0.3662)),
            ((15, 148), (0.0624, 0.1605)),
            ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718)),
        ];
        for ((k, n), expected) in cases {
            let got = wilson(k, n).unwrap();
            let rounded = ((got.0 * 1e4).round() / 1e4, (got.1 * 1e4).round() / 1e4);
            assert!(
                close(rounded, expected),
                "{k}/{n}: {got:?}, expected {expected:?}"
            );
        }
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 0.5), Some(50.0));
        assert_eq!(percentile(&hundred, 0.95), Some(95.0));
        assert_eq!(percentile(&hundred, 0.951), Some(96.0));
        assert_eq!(percentile(&[30.0, 10.0, 20.0], 0.5), Some(20.0));
        assert_eq!(percentile(&[30.0, 10.0, 20.0], 0.95), Some(30.0));
        assert_eq!(percentile(&[7.0], 0.0), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn bootstrap_is_deterministic_and_brackets_the_estimate() {
        let values: Vec<f64> = (1..=101).map(f64::from).collect();
        let a = bootstrap_percentile(&values, 0.5, RESAMPLES, BOOTSTRAP_SEED).unwrap();
        let b = bootstrap_percentile(&values, 0.5, RESAMPLES, BOOTSTRAP_SEED).unwrap();
        assert_eq!(a, b);
        // The median of 101 uniform ranks: its standard error is about 101 * 0.5 / sqrt(101)
        // ≈ 5, so the 95 % interval is about 51 ± 10.
        assert!(a.0 < 51.0 && 51.0 < a.1, "{a:?}");
        assert!(a.0 >= 38.0 && a.1 <= 64.0, "{a:?}");
        assert!(a.1 - a.0 >= 10.0, "{a:?}");
        // Another seed, another (close) interval.
        let c = bootstrap_percentile(&values, 0.5, RESAMPLES, 1).unwrap();
        assert!((c.0 - a.0).abs() <= 4.0 && (c.1 - a.1).abs() <= 4.0);
        // The p95 of 101 values is 96; its interval cannot pass the largest value.
        let p95 = bootstrap_percentile(&values, 0.95, RESAMPLES, BOOTSTRAP_SEED).unwrap();
        assert!(p95.0 < 96.0 && 96.0 <= p95.1 && p95.1 <= 101.0, "{p95:?}");
        // Nothing to resample: no spread.
        assert_eq!(
            bootstrap_percentile(&[42.0; 5], 0.95, RESAMPLES, 3),
            Some((42.0, 42.0))
        );
        assert_eq!(bootstrap_percentile(&[], 0.5, RESAMPLES, 3), None);
    }

    fn eval(seed: u64, hours: f64, json: serde_json::Value) -> (PathBuf, EvalJson) {
        let mut json = json;
        json["run"] = serde_json::json!({
            "seed": seed, "hours": hours, "rate": 10.0, "keys": 40, "step_s": 10,
            "revision": "abc", "detect_config": {"x": 1},
        });
        (
            PathBuf::from(format!("seed-{seed}.json")),
            serde_json::from_value(json).unwrap(),
        )
    }

    #[test]
    fn pooling_sums_detectors_and_classes_and_flags_benign_alerts() {
        let one = eval(
            1,
            6.0,
            serde_json::json!({
                "detectors": {
                    "spend_spike": {"incidents": 2, "detected": 1, "alerts": 3, "true_alerts": 2, "ttd_s": [30.0]},
                    "retry_storm": {"incidents": 1, "detected": 1, "alerts": 1, "true_alerts": 1, "ttd_s": [10.0]},
                },
                "incidents": [
                    {"kind": "spend_spike_small", "detected": true, "ttd_s": 30.0},
                    {"kind": "spend_price_shift", "detected": false, "ttd_s": null},
                    {"kind": "provider_storm_with_backoff", "detected": true, "ttd_s": 10.0},
                    {"kind": "benign_new_key", "detected": false, "ttd_s": null, "benign_alerts": 0},
                ],
                "false_alerts": [{"detector": "spend_spike"}],
            }),
        );
        let two = eval(
            2,
            6.0,
            serde_json::json!({
                "detectors": {
                    "spend_spike": {"incidents": 2, "detected": 2, "alerts": 2, "true_alerts": 2, "ttd_s": [50.0, 70.0]},
                },
                "incidents": [
                    {"kind": "spend_spike_small", "detected": true, "ttd_s": 50.0},
                    {"kind": "spend_price_shift", "detected": true, "ttd_s": 70.0},
                    {"kind": "benign_new_key", "detected": false, "ttd_s": null, "benign_alerts": 2},
                    {"kind": "benign_daily_peak", "detected": false, "ttd_s": null},
                ],
                "false_alerts": [],
            }),
        );
        let pooled = pool(&[one, two]).unwrap();
        assert_eq!(
            pooled.detectors["spend_spike"],
            DetectorPool {
                incidents: 4,
                detected: 3,
                alerts: 5,
                true_alerts: 4,
                ttd_s: vec![30.0, 50.0, 70.0],
            }
        );
        let small = &pooled.classes[&IncidentKind::SpendSpikeSmall];
        assert_eq!((small.incidents, small.detected), (2, 2));
        assert_eq!(small.ttd_s, vec![30.0, 50.0]);
        let shift = &pooled.classes[&IncidentKind::SpendPriceShift];
        assert_eq!((shift.incidents, shift.detected), (2, 1));
        let new_key = &pooled.classes[&IncidentKind::BenignNewKey];
        assert_eq!(
            (new_key.incidents, new_key.alerted, new_key.unknown),
            (2, 1, 0)
        );
        let peak = &pooled.classes[&IncidentKind::BenignDailyPeak];
        assert_eq!((peak.incidents, peak.alerted, peak.unknown), (1, 0, 1));
        // Per run: real incidents, detected, false alerts.
        assert_eq!(
            pooled
                .runs
                .iter()
                .map(|r| (r.2, r.3, r.4))
                .collect::<Vec<_>>(),
            vec![(3, 2, 1), (2, 2, 0)]
        );
        assert!(pooled.warnings.is_empty(), "{:?}", pooled.warnings);
        let text = pooled.render(true);
        assert!(text.contains("seeds 1, 2"), "{text}");
        assert!(text.contains("| spend_spike | 4 | 3 | 0.75 ["), "{text}");
        assert!(text.contains("| benign_new_key | 2 | 1 | 0.50 ["), "{text}");
    }

    #[test]
    fn pooling_warns_when_runs_are_not_one_experiment() {
        let empty = serde_json::json!({"detectors": {}, "incidents": [], "false_alerts": []});
        let pooled = pool(&[eval(1, 6.0, empty.clone()), eval(1, 8.0, empty.clone())]).unwrap();
        assert_eq!(
            pooled.warnings,
            vec![
                "1 seed(s) pooled more than once".to_owned(),
                "the runs differ in hours: they are not one experiment".to_owned(),
            ]
        );
        let unknown_kind = serde_json::json!({"detectors": {}, "false_alerts": [],
            "incidents": [{"kind": "spend_nonsense", "detected": false, "ttd_s": null}]});
        assert!(pool(&[eval(3, 6.0, unknown_kind)]).is_err());
    }
}
