//! The schema on a ClickHouse cluster (`clickhouse.cluster`): each table of the migrations
//! becomes a replicated local table on every shard (`<table>_local`, `Replicated*MergeTree`)
//! and a `Distributed` table under the table's own name, so that every query Tripline and the
//! dashboards run reads and writes the same names on one node or many.
//!
//! The migrations are written once, for one server; this module rewrites each statement into
//! its cluster form, all `ON CLUSTER`:
//! - `CREATE TABLE db.t … ENGINE = X …` becomes `db.t_local` with
//!   `ReplicatedX('/clickhouse/tables/{shard}/db/t_local', '{replica}')`, and `db.t` as
//!   `Distributed(cluster, db, t_local, <sharding key>)`: raw rows and the key rollup by a hash
//!   of `api_key_id` (a key's rows and its rollup on one shard), alerts by fingerprint.
//! - A materialized view reads the raw `_local` table and writes the rollup's `_local` table:
//!   it fires once per row, on the replica that took the insert; the other replica fetches
//!   both parts.
//! - `ALTER TABLE db.t ADD COLUMN` alters `db.t_local`, then drops and re-creates the
//!   `Distributed` table over it (a `Distributed` table holds no rows; ClickHouse 18.16 refuses
//!   to ALTER a non-replicated table `ON CLUSTER` when the cluster's shards are replicated).
//! - `INSERT … SELECT` runs once, through the `Distributed` tables.

/// One step of a migration in cluster form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run the statement.
    Run(String),
    /// Run the statement unless `table` already has `column` (ClickHouse 18.16 has no
    /// `ADD COLUMN IF NOT EXISTS`).
    AddColumn {
        table: String,
        column: String,
        sql: String,
    },
}

/// The sharding key of each table's `Distributed` table. Rollups fed by a view live where their
/// raw rows live; their key only places rows written to them directly (an ingest repair), which
/// any shard may hold since reads merge the states of all shards.
fn sharding_key(table: &str) -> Option<&'static str> {
    Some(match table {
        "gateway_requests" | "provider_attempts" | "rollup_key_1m" => "sipHash64(api_key_id)",
        "alerts" | "alert_publications" => "sipHash64(fingerprint)",
        "rollup_project_1m" | "rollup_model_1m" | "rollup_provider_1m" | "notifications" => {
            "rand()"
        }
        _ => return None,
    })
}

/// Columns that pending migrations add to replicated local tables: `(table, definition)`.
///
/// On a cluster, a migration that creates a table and a later one that adds a column to it,
/// both pending (a new deployment), create the table with the column ([`with_columns`]): the
/// `ADD COLUMN` then finds it and is skipped. ClickHouse 18.16 runs an `ALTER … ON CLUSTER` of a
/// replicated table on one replica per shard, and races when the other replica receives the
/// column by replication first: it runs the ALTER too, fails ("column with this name already
/// exists") and leaves the task unfinished, so the statement hangs for
/// `distributed_ddl_task_timeout`. Seen once in CI; a new deployment never ALTERs.
pub fn added_columns(steps: &[Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::AddColumn { table, sql, .. } if sql.starts_with("ALTER TABLE ") => sql
                .split_once(" ADD COLUMN ")
                .map(|(_, definition)| (table.clone(), definition.to_owned())),
            _ => None,
        })
        .collect()
}

/// `step` with the `added` columns of its table appended to its column list, when it creates one
/// of those tables.
pub fn with_columns(step: Step, database: &str, added: &[(String, String)]) -> Step {
    let Step::Run(sql) = step else {
        return step;
    };
    let Some(rest) = sql.strip_prefix(&format!("CREATE TABLE IF NOT EXISTS {database}.")) else {
        return Step::Run(sql);
    };
    let table = rest.split_whitespace().next().unwrap_or_default();
    let columns: Vec<&str> = added
        .iter()
        .filter(|(t, _)| t == table)
        .map(|(_, definition)| definition.as_str())
        .collect();
    let Some(engine) = sql.find("ENGINE = ") else {
        return Step::Run(sql);
    };
    let Some(close) = sql[..engine].rfind(')') else {
        return Step::Run(sql);
    };
    if columns.is_empty() {
        return Step::Run(sql);
    }
    let extra: String = columns.iter().map(|c| format!(",\n    {c}")).collect();
    Step::Run(format!(
        "{}{extra}\n{}",
        sql[..close].trim_end(),
        &sql[close..]
    ))
}

/// The bookkeeping table of applied migrations: one copy on every node of the cluster.
pub fn migrations_table(database: &str, cluster: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.schema_migrations ON CLUSTER {cluster} \
         (version UInt32, name String, checksum String, applied_at DateTime('UTC')) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/schema_migrations', \
         '{{shard}}-{{replica}}') ORDER BY version"
    )
}

/// `statement` (of the migrations, for `database`) in its cluster form.
pub fn clustered(statement: &str, database: &str, cluster: &str) -> Result<Vec<Step>, String> {
    let prefix = |p: &str| statement.strip_prefix(&format!("{p} {database}."));
    if let Some(rest) = prefix("CREATE TABLE IF NOT EXISTS") {
        return create_table(rest, database, cluster);
    }
    if let Some(rest) = prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS") {
        return materialized_view(rest, database, cluster);
    }
    if let Some(rest) = prefix("ALTER TABLE") {
        return add_column(rest, database, cluster);
    }
    if statement.starts_with("INSERT INTO ") {
        return Ok(vec![Step::Run(statement.to_owned())]);
    }
    Err(format!(
        "no cluster form for this statement: {}",
        first_line(statement)
    ))
}

fn first_line(statement: &str) -> &str {
    statement.lines().next().unwrap_or(statement)
}

/// The `Distributed` table `database.table` over `table_local`.
fn distributed(table: &str, database: &str, cluster: &str) -> Result<String, String> {
    let key = sharding_key(table)
        .ok_or_else(|| format!("table {table} has no sharding key for cluster mode"))?;
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} AS \
         {database}.{table}_local ENGINE = Distributed({cluster}, {database}, {table}_local, {key})"
    ))
}

/// `rest`: `t (columns) ENGINE = X [(args)] …`.
fn create_table(rest: &str, database: &str, cluster: &str) -> Result<Vec<Step>, String> {
    let name_end = rest
        .find(|c: char| c.is_whitespace() || c == '(')
        .ok_or("a CREATE TABLE without columns")?;
    let (table, body) = rest.split_at(name_end);
    let engine_at = body
        .find("ENGINE = ")
        .ok_or("a CREATE TABLE without ENGINE")?;
    let (columns, engine) = body.split_at(engine_at);
    let engine = &engine["ENGINE = ".len()..];
    let engine_end = engine
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(engine.len());
    let (engine_name, after) = engine.split_at(engine_end);
    if !engine_name.ends_with("MergeTree") {
        return Err(format!(
            "{table}: engine {engine_name} cannot be replicated"
        ));
    }
    let path = format!("'/clickhouse/tables/{{shard}}/{database}/{table}_local', '{{replica}}'");
    // Engine arguments of the single-node form (a version column, say) follow the path.
    let after = match after.strip_prefix('(') {
        Some(args) if args.starts_with(')') => format!("({path}{args}"),
        Some(args) => format!("({path}, {args}"),
        None => format!("({path}){after}"),
    };
    Ok(vec![
        Step::Run(format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table}_local ON CLUSTER {cluster}{columns}\
             ENGINE = Replicated{engine_name}{after}"
        )),
        Step::Run(distributed(table, database, cluster)?),
    ])
}

/// `rest`: `v TO db.r AS SELECT … FROM db.s …`.
fn materialized_view(rest: &str, database: &str, cluster: &str) -> Result<Vec<Step>, String> {
    let (view, body) = rest.split_once(' ').ok_or("a view without a body")?;
    let to = format!("TO {database}.");
    let from = format!("FROM {database}.");
    let body = body
        .strip_prefix(&to)
        .ok_or("a materialized view without TO <table>")?;
    let (target, select) = body.split_once(' ').ok_or("a view without a SELECT")?;
    let at = select
        .find(&from)
        .ok_or("a materialized view without FROM <table>")?;
    let (head, tail) = select.split_at(at + from.len());
    let source_end = tail
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(tail.len());
    let (source, tail) = tail.split_at(source_end);
    Ok(vec![Step::Run(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} ON CLUSTER {cluster} \
         {to}{target}_local {head}{source}_local{tail}"
    ))])
}

/// `rest`: `t ADD COLUMN c Type`.
fn add_column(rest: &str, database: &str, cluster: &str) -> Result<Vec<Step>, String> {
    let (table, change) = rest.split_once(' ').ok_or("an ALTER without a change")?;
    let column = change
        .strip_prefix("ADD COLUMN ")
        .and_then(|c| c.split_whitespace().next())
        .ok_or_else(|| format!("{table}: only ADD COLUMN has a cluster form"))?;
    Ok(vec![
        Step::AddColumn {
            table: format!("{table}_local"),
            column: column.to_owned(),
            sql: format!("ALTER TABLE {database}.{table}_local ON CLUSTER {cluster} {change}"),
        },
        // Re-created over the altered local table (it copies the columns it has), unless it
        // already has the column: a rerun leaves it alone.
        Step::AddColumn {
            table: table.to_owned(),
            column: column.to_owned(),
            sql: format!("DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {cluster}"),
        },
        Step::Run(distributed(table, database, cluster)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;

    fn sql(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .map(|s| match s {
                Step::Run(sql) | Step::AddColumn { sql, .. } => sql.as_str(),
            })
            .collect()
    }

    #[test]
    fn every_migration_has_a_cluster_form() {
        for migration in MIGRATIONS {
            for statement in migration.statements("db") {
                let steps = clustered(&statement, "db", "c")
                    .unwrap_or_else(|e| panic!("{}: {e}", migration.name));
                for sql in sql(&steps) {
                    assert!(
                        sql.contains(" ON CLUSTER c") || sql.starts_with("INSERT INTO "),
                        "{sql}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_table_becomes_a_replicated_local_table_and_a_distributed_one() {
        let steps = clustered(
            "CREATE TABLE IF NOT EXISTS db.gateway_requests\n(\n    a String\n)\n\
             ENGINE = MergeTree\nPARTITION BY toYYYYMMDD(ts)\nORDER BY a",
            "db",
            "c",
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            [
                "CREATE TABLE IF NOT EXISTS db.gateway_requests_local ON CLUSTER c\n(\n    a String\n)\n\
                 ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/gateway_requests_local', \
                 '{replica}')\nPARTITION BY toYYYYMMDD(ts)\nORDER BY a",
                "CREATE TABLE IF NOT EXISTS db.gateway_requests ON CLUSTER c AS \
                 db.gateway_requests_local ENGINE = Distributed(c, db, gateway_requests_local, \
                 sipHash64(api_key_id))",
            ]
        );
    }

    #[test]
    fn engine_arguments_follow_the_replication_path() {
        let steps = clustered(
            "CREATE TABLE IF NOT EXISTS db.alerts (v UInt8) ENGINE = ReplacingMergeTree(v) ORDER BY v",
            "db",
            "c",
        )
        .unwrap();
        assert!(sql(&steps)[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/alerts_local', \
             '{replica}', v) ORDER BY v"
        ));
    }

    #[test]
    fn a_view_reads_and_writes_local_tables() {
        let steps = clustered(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db.r_mv TO db.rollup_key_1m AS\nSELECT\n    \
             api_key_id\nFROM db.gateway_requests\nGROUP BY api_key_id",
            "db",
            "c",
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            ["CREATE MATERIALIZED VIEW IF NOT EXISTS db.r_mv ON CLUSTER c TO db.rollup_key_1m_local \
              AS\nSELECT\n    api_key_id\nFROM db.gateway_requests_local\nGROUP BY api_key_id"]
        );
    }

    #[test]
    fn an_added_column_alters_the_local_table_and_recreates_the_distributed_one() {
        let steps = clustered(
            "ALTER TABLE db.gateway_requests ADD COLUMN event_digest UInt64",
            "db",
            "c",
        )
        .unwrap();
        assert_eq!(
            steps[0],
            Step::AddColumn {
                table: "gateway_requests_local".into(),
                column: "event_digest".into(),
                sql: "ALTER TABLE db.gateway_requests_local ON CLUSTER c ADD COLUMN event_digest \
                      UInt64"
                    .into()
            }
        );
        assert_eq!(
            sql(&steps)[1],
            "DROP TABLE IF EXISTS db.gateway_requests ON CLUSTER c"
        );
        assert!(sql(&steps)[2].contains("ENGINE = Distributed(c, db, gateway_requests_local"));
    }

    /// A new deployment creates the tables with the columns later migrations add: the 18.16
    /// `ALTER … ON CLUSTER` race never happens on it.
    #[test]
    fn a_new_cluster_creates_added_columns_with_their_table() {
        let steps: Vec<Step> = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements("db"))
            .flat_map(|s| clustered(&s, "db", "c").unwrap())
            .collect();
        let added = added_columns(&steps);
        assert!(added.contains(&(
            "gateway_requests_local".to_owned(),
            "event_digest UInt64".to_owned()
        )));
        let create = steps
            .iter()
            .cloned()
            .map(|s| with_columns(s, "db", &added))
            .find_map(|s| match s {
                Step::Run(sql)
                    if sql.starts_with("CREATE TABLE IF NOT EXISTS db.gateway_requests_local") =>
                {
                    Some(sql)
                }
                _ => None,
            })
            .unwrap();
        assert!(
            create.contains("src_offset Int64,\n    event_digest UInt64\n)\nENGINE = Replicated"),
            "{create}"
        );
    }

    #[test]
    fn what_has_no_cluster_form_is_refused() {
        assert!(clustered(
            "CREATE TABLE IF NOT EXISTS db.t (a UInt8) ENGINE = Log",
            "db",
            "c"
        )
        .is_err());
        assert!(
            clustered(
                "CREATE TABLE IF NOT EXISTS db.t (a UInt8) ENGINE = MergeTree ORDER BY a",
                "db",
                "c"
            )
            .is_err(),
            "a table without a sharding key"
        );
        assert!(clustered("DROP TABLE db.t", "db", "c").is_err());
    }
}
