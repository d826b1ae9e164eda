//! The command line: config checking and migrations.

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

#[test]
fn check_config_reports_every_problem_with_its_place() {
    let dir = std::env::temp_dir().join(format!("tripline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[ingest]\nbatch_max_rows = 0\n\n[clickhouse]\nurl = \"ftp://x\"\n",
    )
    .unwrap();
    let out = tripline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml: line 5, column 1: clickhouse.url"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml: line 2, column 1: ingest.batch_max_rows: must be between 1 and 1000000 (got 0)"), "{stderr}");

    std::fs::write(&path, "[ingest]\nbatch_rows = 5\n").unwrap();
    let out = tripline(&["check-config", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2, column 1") && stderr.contains("batch_rows"),
        "{stderr}"
    );
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
        13.0
    );
}
