//! The first run a new user makes, `scripts/demo.sh`, shortened: two hours of history instead
//! of a day, then the demo's five incidents live, their alerts delivered to the demo's
//! signed-webhook sink and listed by the API behind the demo's generated token. The same
//! script, on the suite's servers with the debug binary, in a database, topics and consumer
//! groups of its own. (With two hours of history a key's working day is new to the models and
//! may page: the full demo backfills a day; false alarms are not what this test checks.)

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// The five incidents of `--incidents demo` (simulate's `demo_scenario`) and their detectors.
const INCIDENTS: [(&str, &str); 5] = [
    ("leaked_key_probe_then_burst", "leaked_key"),
    ("impossible_travel", "cross_region"),
    ("key_scanning", "leaked_key"),
    ("retry_storm_no_backoff", "retry_storm"),
    ("spend_spike_large", "spend_spike"),
];

#[test]
fn the_demo_answers_its_five_incidents_and_delivers_them_signed() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = format!("demo_e2e_{}", std::process::id());
    let listen = format!("127.0.0.1:{}", common::free_port());
    let output = Command::new("bash")
        .arg(repo.join("scripts/demo.sh"))
        .current_dir(repo)
        .env("TRIPLINE_DEMO_SETUP", "0")
        .env("TRIPLINE_BIN", env!("CARGO_BIN_EXE_tripline"))
        .env("TRIPLINE_DEMO_HISTORY_HOURS", "2")
        .env("TRIPLINE_DEMO_RATE", "10")
        .env("TRIPLINE_DEMO_DURATION_S", "480")
        .env("TRIPLINE_DEMO_DATABASE", &name)
        .env("TRIPLINE_DEMO_NAME", &name)
        .env("TRIPLINE_DEMO_LISTEN", &listen)
        .env("TRIPLINE_DEMO_SINK_PORT", common::free_port().to_string())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let token = line_after(&stdout, "token: ")
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned));
    let api = token.as_deref().map(|token| {
        Command::new("curl")
            .args(["-fsS", "--max-time", "5", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://{listen}/api/v1/alerts"))
            .output()
            .expect("curl runs")
    });
    // The demo leaves `tripline run` and the sink up for the user; the test stops them.
    let _ = Command::new("bash")
        .arg(repo.join("scripts/servers.sh"))
        .arg("stop-tripline")
        .status();
    assert!(
        output.status.success(),
        "the demo failed (an incident NOT FOUND exits 1):\n{stdout}\n{stderr}"
    );

    // Every incident answered by its own detector, with the time it took.
    for (kind, detector) in INCIDENTS {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no report line for {kind}:\n{stdout}"));
        assert!(
            line.contains(&format!(" {detector} (")) && line.contains(" after "),
            "{kind} not answered by {detector}: {line}"
        );
    }

    // The sink verified each delivery's signature before keeping it (a bad one is refused
    // with 401 and not written), and the deliveries carry every detector's alert.
    let kept = line_after(&stdout, "webhooks received").expect("the demo names the sink's file");
    let kept = kept.split_whitespace().next().unwrap();
    let deliveries = std::fs::read_to_string(kept).unwrap();
    let detectors: BTreeSet<String> = deliveries
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .flat_map(|d| d["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["detector"].as_str().map(str::to_owned))
        .collect();
    for (_, detector) in INCIDENTS {
        assert!(
            detectors.contains(detector),
            "no {detector} alert reached the sink: {detectors:?}"
        );
    }
    assert!(!stdout.contains("bad signature") && !stderr.contains("bad signature"));

    // The console's address and its generated token, which the API takes.
    assert!(
        stdout.contains(&format!("console            http://{listen}/ui/")),
        "{stdout}"
    );
    let api = api.expect("the demo prints the console's token");
    assert!(api.status.success(), "the API refused the demo's token");
    let alerts: serde_json::Value = serde_json::from_slice(&api.stdout).unwrap();
    assert!(
        alerts.as_array().is_some_and(|a| !a.is_empty()),
        "the API lists no alert: {alerts}"
    );
}

/// What follows `marker` on the first line holding it, trimmed.
fn line_after(text: &str, marker: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.split_once(marker))
        .map(|(_, rest)| rest.trim().to_owned())
}
