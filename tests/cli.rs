//! The command line: config checking, help and migrations.

mod common;

use std::process::Command;

fn tripline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(args)
        .env("TRIPLINE_FINGERPRINT_SECRET", common::SECRET)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tripline.example.toml");
    let out = tripline(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

/// `tripline` without the endpoint overrides of scripts/env.sh, which win over the file.
fn tripline_without_overrides(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tripline"));
    for (var, _) in tripline_core::config::ENV_OVERRIDES {
        command.env_remove(var);
    }
    command
        .args(args)
        .env("TRIPLINE_FINGERPRINT_SECRET", common::SECRET)
        .output()
        .unwrap()
}

#[test]
fn check_config_reports_every_problem_with_its_place() {
    let dir = std::env::temp_dir().join(format!("tripline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let file = path.to_str().unwrap();
    std::fs::write(
        &path,
        "[ingest]\nbatch_max_rows = 0\n\n[clickhouse]\nurl = \"ftp://x\"\n\n[detect.spend_spike.model]\n  min_abs_usd = -2.5\n",
    )
    .unwrap();
    let out = tripline_without_overrides(&["check-config", "--config", file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{file} is invalid (3 problems):\n")),
        "{stderr}"
    );
    for expected in [
        format!("{file}:2:18: ingest.batch_max_rows: must be between 1 and 1000000 (got 0)\n  hint: rows per ClickHouse insert: fewer means more, smaller inserts (default: 50000)\n"),
        format!("{file}:5:7: clickhouse.url: \"ftp://x\" is not an http(s) URL\n  hint: ClickHouse's HTTP interface"),
        format!("{file}:8:17: detect.spend_spike.model.min_abs_usd: -2.5 is out of range\n  hint: must be >= 0 (default: 1.0)\n"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\nnot in\n{stderr}");
    }

    // An unknown key: its place and the closest name.
    std::fs::write(&path, "[ingest]\nbatch_rows = 5\n").unwrap();
    let out = tripline_without_overrides(&["check-config", "--config", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{file}:2:1: ingest.batch_rows: unknown key `batch_rows` in [ingest]\n  hint: did you mean `batch_max_rows`?")),
        "{stderr}"
    );

    // A syntax error.
    std::fs::write(&path, "[kafka]\nbrokers = kafka:9092\n").unwrap();
    let out = tripline_without_overrides(&["check-config", "--config", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{file}:2:11: kafka.brokers: TOML syntax: "))
            && stderr.contains("  hint: text values go in double quotes"),
        "{stderr}"
    );

    // A bad environment override is placed at its variable.
    std::fs::write(&path, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["check-config", "--config", file])
        .env("TRIPLINE_FINGERPRINT_SECRET", common::SECRET)
        .env("TRIPLINE_CLICKHOUSE_URL", "clickhouse:8123")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("environment variable TRIPLINE_CLICKHOUSE_URL: clickhouse.url: \"clickhouse:8123\" is not an http(s) URL\n  hint: "),
        "{stderr}"
    );

    // A missing file, and a bad command line.
    let out = tripline(&["check-config", "--config", "/nonexistent/tripline.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
    let out = tripline(&["check-config", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_warns_about_the_environment_but_passes() {
    let dir = std::env::temp_dir().join(format!("tripline-cli-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("env.toml");
    let file = path.to_str().unwrap();
    std::fs::write(
        &path,
        "[secrets]\nfingerprint_secret_env = \"TRIPLINE_TEST_UNSET_SECRET\"\n\n[enrich]\ncountry_db = \"missing.mmdb\"\n",
    )
    .unwrap();
    let out = tripline(&["check-config", "--config", file]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: {file}:2:26: secrets.fingerprint_secret_env: the fingerprint secret is missing: TRIPLINE_TEST_UNSET_SECRET is not set\n  hint: `export TRIPLINE_TEST_UNSET_SECRET=$(openssl rand -hex 32)`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("warning: {file}:5:14: enrich.country_db: ")),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{file}: ok")));
}

#[test]
fn every_command_has_help() {
    for command in [
        "run",
        "ingest",
        "detect",
        "alert",
        "migrate",
        "check-config",
        "simulate",
        "bench",
        "evaluate",
        "backtest",
    ] {
        let out = tripline(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        assert!(!out.stdout.is_empty(), "{command}");
    }
    let out = tripline(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:"), "{help}");
    let out = tripline(&["check-config", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status: 0"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_are_recorded() {
    let env = common::TestEnv::new("migrate").await;
    let config = env.config_path();
    for _ in 0..2 {
        let out = tripline(&["migrate", "--config", config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let migrations = tripline_store::MIGRATIONS;
    assert_eq!(
        env.scalar("SELECT count() FROM schema_migrations").await,
        migrations.len() as f64
    );
    assert_eq!(
        env.scalar("SELECT max(version) FROM schema_migrations")
            .await,
        f64::from(migrations[migrations.len() - 1].version)
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT count() FROM system.tables WHERE database = '{}'",
            env.database
        ))
        .await,
        14.0
    );
}
