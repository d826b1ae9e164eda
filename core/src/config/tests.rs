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

fn errors(text: &str) -> Vec<ConfigError> {
    Config::from_toml(text).unwrap_err()
}

/// (line, column, key) of each error.
fn places(errors: &[ConfigError]) -> Vec<(Option<usize>, Option<usize>, &str)> {
    errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect()
}

#[test]
fn syntax_errors_are_all_reported_with_place_key_and_hint() {
    let e = errors("[ingest]\nbatch_max_rows = 10\nretry_max_ms = soon\n\n[kafka]\nbrokers = x\n");
    assert_eq!(
        places(&e),
        [
            (Some(3), Some(16), "ingest.retry_max_ms"),
            (Some(6), Some(11), "kafka.brokers")
        ]
    );
    assert!(e[0].message.starts_with("TOML syntax:"), "{}", e[0]);
    assert!(e[0].hint.contains("double quotes"), "{}", e[0]);
}

#[test]
fn duplicate_key_is_a_syntax_error_with_a_hint() {
    let e = errors("[ingest]\nbatch_max_rows = 10\nbatch_max_rows = 20\n");
    assert_eq!(places(&e), [(Some(3), Some(1), "ingest.batch_max_rows")]);
    assert!(e[0].hint.contains("only once"), "{}", e[0]);
}

#[test]
fn unknown_key_suggests_the_closest_name() {
    let e = errors("[ingest]\nbatch_max_rows = 10\nbatch_max_row = 5\n");
    assert_eq!(places(&e), [(Some(3), Some(1), "ingest.batch_max_row")]);
    assert_eq!(e[0].message, "unknown key `batch_max_row` in [ingest]");
    assert!(
        e[0].hint
            .starts_with("did you mean `batch_max_rows`? keys in [ingest]: "),
        "{}",
        e[0]
    );

    let e = errors("[ingets]\nbatch_max_rows = 10\n");
    assert_eq!(places(&e), [(Some(1), Some(2), "ingets")]);
    assert_eq!(e[0].message, "unknown section `ingets`");
    assert!(e[0].hint.starts_with("did you mean `ingest`?"), "{}", e[0]);
}

#[test]
fn unknown_key_that_lives_in_another_table_says_where() {
    let e = errors("[detect.spend_spike]\nmin_abs_usd = 5.0\n");
    assert_eq!(
        places(&e),
        [(Some(2), Some(1), "detect.spend_spike.min_abs_usd")]
    );
    assert_eq!(
        e[0].hint,
        "`min_abs_usd` belongs in [detect.spend_spike.model]: did you mean `detect.spend_spike.model.min_abs_usd`?"
    );
}

#[test]
fn wrong_type_names_the_expected_type_and_the_default() {
    let e = errors("[kafka]\nfetch_wait_max_ms = \"fast\"\n");
    assert_eq!(places(&e), [(Some(2), Some(21), "kafka.fetch_wait_max_ms")]);
    assert_eq!(
        e[0].message,
        "expected a whole number, 0 or more, found string \"fast\""
    );
    assert_eq!(
        e[0].hint,
        "write a whole number, 0 or more, e.g. fetch_wait_max_ms = 10 (the default)"
    );
}

#[test]
fn unknown_choice_lists_the_choices() {
    let e = errors("[[alerting.receivers]]\nname = \"a\"\nkind = \"slak\"\n");
    assert_eq!(
        places(&e),
        [(Some(3), Some(8), "alerting.receivers[0].kind")]
    );
    assert_eq!(
        e[0].hint,
        "did you mean \"slack\"? One of: webhook, slack, email"
    );
}

#[test]
fn missing_field_points_at_its_table() {
    let e = errors("[[alerting.receivers]]\nname = \"a\"\nurl = \"http://x\"\n");
    assert_eq!(
        places(&e),
        [(Some(1), Some(1), "alerting.receivers[0].kind")]
    );
    assert!(e[0].hint.contains("kind = \"webhook\""), "{}", e[0]);
}

#[test]
fn bad_values_are_all_reported_with_key_place_and_default() {
    let text =
        "[server]\nlisten = \"nowhere\"\n\n[ingest]\n  batch_max_rows = 0\nbatch_max_age_ms = 5\n";
    let e = errors(text);
    assert_eq!(
        places(&e),
        [
            (Some(2), Some(10), "server.listen"),
            (Some(5), Some(20), "ingest.batch_max_rows"),
            (Some(6), Some(20), "ingest.batch_max_age_ms"),
        ]
    );
    assert_eq!(
        e[1].clone().in_file("tripline.toml").to_string(),
        "tripline.toml:5:20: ingest.batch_max_rows: must be between 1 and 1000000 (got 0)\n  \
         hint: rows per ClickHouse insert: fewer means more, smaller inserts (default: 50000)"
    );
    assert!(
        e[0].hint.contains("(default: \"127.0.0.1:9898\")"),
        "{}",
        e[0]
    );
}

#[test]
fn cross_field_checks_name_both_keys() {
    let e = errors("[kafka]\nsession_timeout_ms = 2000\nheartbeat_interval_ms = 1000\n");
    assert_eq!(
        places(&e),
        [(Some(3), Some(25), "kafka.heartbeat_interval_ms")]
    );
    assert!(e[0].message.contains("session_timeout_ms 2000"), "{}", e[0]);
    assert!(
        e[0].hint.contains("raise kafka.session_timeout_ms"),
        "{}",
        e[0]
    );

    // The key that is not written points at its table.
    let e = errors("[detect]\nshard_count = 2\n\n[detect.retry_storm]\namplification = 6.0\n");
    assert_eq!(
        places(&e),
        [(Some(5), Some(17), "detect.retry_storm.amplification")]
    );
    assert!(e[0].hint.contains("critical_amplification"), "{}", e[0]);
}

#[test]
fn every_spend_model_problem_is_reported() {
    let e = errors(
        "[detect.spend_spike.model]\ntail_probability = 0.9\nmin_abs_usd = -1.0\nanomaly_fold = 2\n",
    );
    assert_eq!(
        places(&e),
        [
            (
                Some(2),
                Some(20),
                "detect.spend_spike.model.tail_probability"
            ),
            (Some(3), Some(15), "detect.spend_spike.model.min_abs_usd"),
            (Some(4), Some(16), "detect.spend_spike.model.anomaly_fold"),
        ]
    );
    assert_eq!(e[1].message, "-1 is out of range");
    assert_eq!(e[1].hint, "must be >= 0 (default: 1.0)");
}

#[test]
fn schema_and_value_errors_are_reported_together() {
    let text = "[ingest]\nbatch_size = 5\nbatch_max_rows = 0\n\n[kafka]\nfetch_wait_max_ms = \"fast\"\nheartbeat_interval_ms = 9000\n\n[clickhouse]\nurl = \"ftp://x\"\n";
    let e = errors(text);
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    // The wrong-typed kafka value is taken out, so kafka's cross-field check (which would
    // compare with a default) is not reported; the others are, in file order.
    assert_eq!(
        keys,
        [
            "ingest.batch_size",
            "ingest.batch_max_rows",
            "kafka.fetch_wait_max_ms",
            "clickhouse.url"
        ],
        "{e:#?}"
    );
}

#[test]
fn managed_kafka_properties_cannot_be_overridden() {
    let e = errors("[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n\"group.id\" = \"x\"\n");
    assert_eq!(
        places(&e),
        [
            (Some(2), Some(24), "kafka.properties.\"enable.auto.commit\""),
            (Some(3), Some(14), "kafka.properties.\"group.id\"")
        ]
    );
    assert!(e[1].hint.contains("kafka.ingest_group_id"), "{}", e[1]);
}

#[test]
fn env_overrides_replace_endpoints() {
    let mut config = Config::default();
    let applied = config.apply_env_overrides(|var| match var {
        "TRIPLINE_KAFKA_BROKERS" => Some("kafka:9092".into()),
        "TRIPLINE_CLICKHOUSE_URL" => Some("  ".into()),
        _ => None,
    });
    assert_eq!(config.kafka.brokers, "kafka:9092");
    assert_eq!(config.clickhouse.url, "http://127.0.0.1:8123");
    assert_eq!(applied, [("TRIPLINE_KAFKA_BROKERS", "kafka.brokers")]);
}

#[test]
fn a_bad_env_override_is_reported_with_the_variable_as_its_place() {
    let e = Config::load("[server]\nlisten = \"127.0.0.1:1\"\n", |var| {
        (var == "TRIPLINE_LISTEN").then(|| "nowhere".to_owned())
    })
    .unwrap_err();
    assert_eq!(places(&e), [(None, None, "server.listen")]);
    let shown = e[0].clone().in_file("tripline.toml").to_string();
    assert!(
        shown.starts_with(
            "environment variable TRIPLINE_LISTEN: server.listen: \"nowhere\" is not a socket address\n  hint: "
        ),
        "{shown}"
    );
    assert!(shown.contains("fix or unset it"), "{shown}");
}

#[test]
fn every_error_has_a_place_and_a_hint() {
    let text = r#"
[server]
listen = "x"
[kafka]
brokers = ""
gateway_topic = "a b"
dlq_topic = "tripline.gateway.requests"
fetch_wait_max_ms = 0
[clickhouse]
database = "1db"
compression = "zstd"
[ingest]
max_future_skew_ms = -1
dedup_window_s = 1
dedup_max_entries = 1
retry_initial_ms = 0
[secrets]
fingerprint_secret_env = ""
[collector]
retry_after_s = 0
[collector.token_env]
"Bad Name" = ""
[detect]
eval_interval_ms = 1
shard_index = 3
[detect.spend_spike]
daily_budget_usd = -5.0
[detect.retry_storm]
retry_share = 7.0
[detect.cross_region]
max_speed_kmh = 0.0
[detect.keys."key-7"]
disabled = ["cross_regoin"]
[alerting.route]
receiver = "nobody"
[[alerting.receivers]]
name = "ops"
kind = "email"
"#;
    let e = errors(text);
    assert!(e.len() >= 20, "{e:#?}");
    for error in &e {
        assert!(error.line.is_some(), "no place: {error}");
        assert!(!error.key.is_empty(), "no key: {error}");
        assert!(!error.hint.is_empty(), "no hint: {error}");
    }
    let disabled = e
        .iter()
        .find(|e| e.key == "detect.keys.key-7.disabled")
        .unwrap();
    assert!(
        disabled.hint.starts_with("did you mean \"cross_region\"?"),
        "{disabled}"
    );
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
    assert_eq!(
        places(&errors),
        [
            (Some(2), Some(18), "collector.max_body_bytes"),
            (Some(4), Some(14), "collector.token_env.\"Bad Name\""),
            (Some(4), Some(14), "collector.token_env.\"Bad Name\""),
        ]
    );

    let otlp = Config::from_toml(
        "[collector.otlp]\nkey_attributes = [\"gateway.key\"]\nuser_attributes = []\n",
    )
    .unwrap();
    assert_eq!(otlp.collector.otlp.key_attributes, ["gateway.key"]);
    assert!(otlp.collector.otlp.user_attributes.is_empty());
    assert_eq!(
        otlp.collector.otlp.cost_attributes,
        Config::default().collector.otlp.cost_attributes
    );
    let errors =
        Config::from_toml("[collector.otlp]\nkey_attributes = []\ncost_attributes = [\"\"]\n")
            .unwrap_err();
    assert_eq!(
        places(&errors),
        [
            (Some(2), Some(18), "collector.otlp.key_attributes"),
            (Some(3), Some(19), "collector.otlp.cost_attributes"),
        ]
    );
}

#[test]
fn suggestions_need_a_close_spelling() {
    let keys: Vec<String> = ["batch_max_rows", "retry_max_ms"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        diagnose::suggest("batch_max_row", &keys),
        Some("batch_max_rows")
    );
    assert_eq!(
        diagnose::suggest("retyr_max_ms", &keys),
        Some("retry_max_ms")
    );
    assert_eq!(
        diagnose::suggest("batch_rows", &keys),
        Some("batch_max_rows")
    );
    assert_eq!(diagnose::suggest("listen", &keys), None);
    assert_eq!(diagnose::edit_distance("kitten", "sitting"), 3);
}

#[test]
fn provider_storm_settings_are_checked_by_name() {
    let e = errors("[detect.retry_storm]\nprovider_failure_rise = 1.5\nprovider_load_rise = 0.5\n");
    assert_eq!(
        places(&e),
        [
            (
                Some(2),
                Some(25),
                "detect.retry_storm.provider_failure_rise"
            ),
            (Some(3), Some(22), "detect.retry_storm.provider_load_rise"),
        ]
    );
    let ok = Config::from_toml("[detect.retry_storm]\nprovider_load_rise = 1.5\n").unwrap();
    assert_eq!(ok.detect.retry_storm.provider_load_rise, 1.5);
    assert_eq!(ok.detect.retry_storm.provider_failure_rise, 0.20);
}

/// The cluster's name is written into SQL: only a plain identifier is accepted, at its place.
#[test]
fn a_cluster_name_must_be_an_identifier() {
    let e = errors("[clickhouse]\ncluster = \"prod; DROP\"\n");
    assert_eq!(places(&e), [(Some(2), Some(11), "clickhouse.cluster")]);
    let config = Config::from_toml("[clickhouse]\ncluster = \"tripline\"\n").unwrap();
    assert_eq!(config.clickhouse.cluster, "tripline");
    assert!(Config::from_toml("").unwrap().clickhouse.cluster.is_empty());
}

#[test]
fn group_membership_excludes_fixed_shards_and_bounds_the_shards() {
    let e = errors("[detect]\nshard_count = 2\n\n[detect.group]\nenabled = true\nshards = 0\n");
    assert_eq!(
        places(&e),
        [
            (Some(5), Some(11), "detect.group.enabled"),
            (Some(6), Some(10), "detect.group.shards")
        ],
        "{e:?}"
    );
    assert!(e[0].hint.contains("remove shard_count"), "{}", e[0]);
    assert!(Config::from_toml("[detect.group]\nenabled = true\n").is_ok());
}

#[test]
fn sources_are_validated_with_their_places() {
    let config = Config::from_toml(
        r#"[collector.token_env]
apisix = "TOKEN_APISIX"

[[sources]]
name = "kong"
format = "kong"
kafka_topic = "kong-logs"

[[sources]]
name = "apisix"
format = "mapping"
http_path = "/v1/logs/apisix"
[sources.fields]
ts = { path = "/start_time", time = "unix_ms" }
api_key_id = { path = ["/consumer/username", "/route_id"] }
model = "llm_summary.model"
status = "/response/status"
latency_ms = { path = "/latency", unit = "s" }
"#,
    )
    .unwrap();
    assert_eq!(config.sources.len(), 2);
    assert_eq!(config.sources[0].format, SourceFormat::Kong);
    assert_eq!(config.sources[1].kind, MappedKind::GatewayRequest);

    let errors = Config::from_toml(
        r#"[[sources]]
name = "no-door"
format = "kong"

[[sources]]
name = "own"
format = "events"
kafka_topic = "tripline.gateway.requests"

[[sources]]
name = "posted"
format = "mapping"
http_path = "/v1/logs/kong"
[sources.fields]
ts = { path = "/t", time = "unix_s", unit = "ms" }
model = "a..b"
colour = "/c"
"#,
    )
    .unwrap_err();
    let found: Vec<(Option<usize>, String)> = errors
        .iter()
        .map(|e| (e.line, format!("{} | {}", e.key, e.message)))
        .collect();
    let has = |key: &str, words: &str| {
        assert!(
            found.iter().any(|(line, text)| line.is_some()
                && text.starts_with(key)
                && text.contains(words)),
            "no {key:?} with {words:?} in {found:#?}"
        )
    };
    has("sources[0].name", "neither kafka_topic nor http_path");
    has("sources[1].kafka_topic", "not a topic a source can read");
    has("sources[2].http_path", "not a free collector path");
    has("sources[2].http_path", "has no token");
    has("sources[2].fields.ts", "takes no unit");
    has("sources[2].fields.model", "is not a path");
    has("sources[2].fields.colour", "is not a field");
    has("sources[2].fields", "gives no status");
    has("sources[2].fields", "gives no key");
}
