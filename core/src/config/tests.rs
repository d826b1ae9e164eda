use super::*;

#[test]
fn empty_file_is_all_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.kafka.gateway_topic, "tripline.gateway.requests");
    assert_eq!(config.ingest.batch_max_rows, 50_000);
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../../tripline.example.toml");
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.clickhouse.database, "tripline");
}

#[test]
fn unknown_key_is_reported_with_its_place() {
    let err = Config::from_toml("[ingest]\nbatch_max_rows = 10\nbatch_size = 5\n").unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].line, Some(3));
    assert!(err[0].message.contains("batch_size"), "{}", err[0]);
    assert!(err[0].hint.is_some());
}

#[test]
fn wrong_type_is_reported_with_its_place() {
    let err = Config::from_toml("[kafka]\nfetch_wait_max_ms = \"fast\"\n").unwrap_err();
    assert_eq!(err[0].line, Some(2));
}

#[test]
fn bad_values_are_all_reported_with_key_and_line() {
    let text =
        "[server]\nlisten = \"nowhere\"\n\n[ingest]\n  batch_max_rows = 0\nbatch_max_age_ms = 5\n";
    let errors = Config::from_toml(text).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "ingest.batch_max_rows",
            "ingest.batch_max_age_ms"
        ]
    );
    assert_eq!(errors[1].line, Some(5));
    assert_eq!(errors[1].column, Some(3));
    assert_eq!(
        errors[1].to_string(),
        "line 5, column 3: ingest.batch_max_rows: must be between 1 and 1000000 (got 0)"
    );
}

#[test]
fn managed_kafka_properties_cannot_be_overridden() {
    let errors =
        Config::from_toml("[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n").unwrap_err();
    assert!(errors[0].message.contains("enable.auto.commit"));
}

#[test]
fn env_overrides_replace_endpoints() {
    let mut config = Config::default();
    config.apply_env_overrides(|var| match var {
        "TRIPLINE_KAFKA_BROKERS" => Some("kafka:9092".into()),
        "TRIPLINE_CLICKHOUSE_URL" => Some("  ".into()),
        _ => None,
    });
    assert_eq!(config.kafka.brokers, "kafka:9092");
    assert_eq!(config.clickhouse.url, "http://127.0.0.1:8123");
}

#[test]
fn collector_section_is_validated() {
    let config = Config::from_toml(
        "[collector]\nmax_batch_events = 5\n[collector.token_env]\nlitellm = \"TOKEN_VAR\"\n",
    )
    .unwrap();
    assert_eq!(config.collector.max_batch_events, 5);
    assert_eq!(config.collector.token_env["litellm"], "TOKEN_VAR");
    assert!(Config::default().collector.token_env.is_empty());

    let errors = Config::from_toml(
        "[collector]\nmax_body_bytes = 10\n[collector.token_env]\n\"Bad Name\" = \"\"\n",
    )
    .unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "collector.token_env",
            "collector.token_env",
            "collector.max_body_bytes"
        ]
    );
    assert_eq!(errors[2].line, Some(2));
}
