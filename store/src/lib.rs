//! Tripline's ClickHouse access: one way to build a client, the versioned schema migrations
//! applied at start-up, and the row types ingest writes.
//!
//! Every statement here runs on ClickHouse 18.16 (this project's CI) and on current releases.

mod cluster;
mod migrate;
mod rollups;
mod rows;

pub use migrate::{migrate, schema_statements, Migration, MigrationError, MIGRATIONS};
pub use rollups::{
    rollup_views, RollupView, SelectItem, KEY_ROLLUP_TABLE, MODEL_ROLLUP_TABLE,
    PROJECT_ROLLUP_TABLE, PROVIDER_ROLLUP_TABLE,
};
pub use rows::{CostSource, GatewayRow, ProviderRow, StoredRow, GATEWAY_TABLE, PROVIDER_TABLE};

use tripline_core::config::ClickHouseConfig;

/// A client for the configured server and database.
///
/// Validation is off because ClickHouse 18.16 lacks `RowBinaryWithNamesAndTypes`; the row types'
/// column order is instead checked against the live schema by the end-to-end tests.
pub fn client(config: &ClickHouseConfig, password: Option<&str>) -> clickhouse::Client {
    let mut client = clickhouse::Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_database(&config.database)
        .with_validation(false);
    if !config.cluster.is_empty() {
        // An insert through a Distributed table returns once every shard has its rows, not
        // once the node taking it has queued them: offsets are committed after storage.
        client = client.with_setting("insert_distributed_sync", "1");
    }
    if config.compression == "none" {
        client = client.with_compression(clickhouse::Compression::None);
    }
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        client = client.with_password(password);
    }
    client
}

/// The cluster the schema lives on (`clickhouse.cluster`), None for one server.
pub fn cluster(config: &ClickHouseConfig) -> Option<&str> {
    Some(config.cluster.as_str()).filter(|c| !c.is_empty())
}

/// Drops `database` (on every node of `cluster`): scratch databases of evaluations and
/// benchmarks.
pub async fn drop_database(
    client: &clickhouse::Client,
    database: &str,
    cluster: Option<&str>,
) -> Result<(), clickhouse::error::Error> {
    let on_cluster = cluster.map_or(String::new(), |c| format!(" ON CLUSTER {c}"));
    client
        .clone()
        .with_database("default")
        .query_raw(&format!("DROP DATABASE IF EXISTS {database}{on_cluster}"))
        .execute()
        .await
}

/// A ClickHouse string literal (backslashes and quotes escaped), for the few queries built as
/// text: 18.16 has no server-side query parameters.
pub fn sql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        if ch == '\\' || ch == '\'' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

/// Whether the server answers a trivial query: the readiness probe.
pub async fn ping(client: &clickhouse::Client) -> bool {
    client.query_raw("SELECT 1").fetch_one::<u8>().await.is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn string_literals_are_escaped() {
        assert_eq!(super::sql_string(r"it's a \ test"), r"'it\'s a \\ test'");
    }
}
