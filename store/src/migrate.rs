//! Versioned schema migrations, applied in order at start-up and recorded in
//! `schema_migrations`. Statements are idempotent (`IF NOT EXISTS`), so two workers starting at
//! once, or a crash between a statement and its record, are harmless. On a cluster they run in
//! their cluster form ([`crate::cluster`]).

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use tripline_core::time::now_s;

use crate::cluster::{self, Step};

/// One migration file from `dashboards/migrations/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// SQL with `{db}` standing for the database; statements end with `;` at a line end.
    pub sql: &'static str,
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "raw_events",
        sql: include_str!("../../dashboards/migrations/0001_raw_events.sql"),
    },
    Migration {
        version: 2,
        name: "minute_rollups",
        sql: include_str!("../../dashboards/migrations/0002_minute_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "alerts",
        sql: include_str!("../../dashboards/migrations/0003_alerts.sql"),
    },
    Migration {
        version: 4,
        name: "notifications",
        sql: include_str!("../../dashboards/migrations/0004_notifications.sql"),
    },
    Migration {
        version: 5,
        name: "event_digest",
        sql: include_str!("../../dashboards/migrations/0005_event_digest.sql"),
    },
    Migration {
        version: 6,
        name: "alert_publications",
        sql: include_str!("../../dashboards/migrations/0006_alert_publications.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("clickhouse refused migration {version} ({name}), statement {index}: {source}")]
    Statement {
        version: u32,
        name: &'static str,
        index: usize,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("clickhouse is unreachable or refused the migration bookkeeping: {0}")]
    Bookkeeping(#[from] clickhouse::error::Error),
    #[error("migration {version} ({name}) cannot run on a cluster: {reason}")]
    NoClusterForm {
        version: u32,
        name: &'static str,
        reason: String,
    },
}

impl Migration {
    /// The statements of this migration for `database`, comments and blank lines removed.
    pub fn statements(&self, database: &str) -> Vec<String> {
        let sql = self.sql.replace("{db}", database);
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in sql.lines() {
            let code = line.trim_end();
            if code.trim_start().starts_with("--") || code.trim().is_empty() {
                continue;
            }
            current.push_str(code);
            current.push('\n');
            if code.ends_with(';') {
                let statement = current.trim().trim_end_matches(';').to_owned();
                statements.push(statement);
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            statements.push(current.trim().to_owned());
        }
        statements
    }

    /// The steps of this migration for `database`, on one server or on `cluster`.
    fn steps(&self, database: &str, cluster: Option<&str>) -> Result<Vec<Step>, MigrationError> {
        let mut steps = Vec::new();
        for statement in self.statements(database) {
            match cluster {
                Some(cluster) => {
                    steps.extend(cluster::clustered(&statement, database, cluster).map_err(
                        |reason| MigrationError::NoClusterForm {
                            version: self.version,
                            name: self.name,
                            reason,
                        },
                    )?)
                }
                None => steps.push(match added_column(&statement) {
                    Some((table, column)) => Step::AddColumn {
                        table: table.to_owned(),
                        column: column.to_owned(),
                        sql: statement.clone(),
                    },
                    None => Step::Run(statement),
                }),
            }
        }
        Ok(steps)
    }

    fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
    checksum: String,
}

#[derive(clickhouse::Row, serde::Serialize)]
struct AppliedRecord<'a> {
    version: u32,
    name: &'a str,
    checksum: String,
    applied_at: u32,
}

/// Every statement [`migrate`] would run on a fresh `database` (on `cluster`, in their cluster
/// form), bookkeeping included, in order.
pub fn schema_statements(
    database: &str,
    cluster: Option<&str>,
) -> Result<Vec<String>, MigrationError> {
    let (create_database, create_bookkeeping) = bookkeeping(database, cluster);
    let mut statements = vec![create_database, create_bookkeeping];
    let mut steps = Vec::new();
    for migration in MIGRATIONS {
        steps.extend(migration.steps(database, cluster)?);
    }
    // A fresh schema: on a cluster, added columns come with their tables, and their ALTERs
    // (which would find them) are left out.
    let added = if cluster.is_some() {
        cluster::added_columns(&steps)
    } else {
        Vec::new()
    };
    for step in steps {
        match cluster::with_columns(step, database, &added) {
            Step::AddColumn { .. } if !added.is_empty() => {}
            Step::Run(sql) | Step::AddColumn { sql, .. } => statements.push(sql),
        }
    }
    Ok(statements)
}

/// The statements creating `database` and its `schema_migrations` table.
fn bookkeeping(database: &str, cluster: Option<&str>) -> (String, String) {
    match cluster {
        Some(cluster) => (
            format!("CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"),
            cluster::migrations_table(database, cluster),
        ),
        None => (
            format!("CREATE DATABASE IF NOT EXISTS {database}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.schema_migrations \
                 (version UInt32, name String, checksum String, applied_at DateTime('UTC')) \
                 ENGINE = MergeTree ORDER BY version"
            ),
        ),
    }
}

/// Creates `database` if needed and applies the migrations it has not seen, on one server or,
/// with `cluster`, on every node of that ClickHouse cluster. Returns the versions applied by
/// this call.
pub async fn migrate(
    client: &clickhouse::Client,
    database: &str,
    cluster: Option<&str>,
) -> Result<Vec<u32>, MigrationError> {
    // The database may not exist yet, so this statement runs outside it.
    let server = client.clone().with_database("default");
    let (create_database, create_bookkeeping) = bookkeeping(database, cluster);
    server.query_raw(&create_database).execute().await?;
    server.query_raw(&create_bookkeeping).execute().await?;
    let applied: Vec<Applied> = server
        .query_raw(&format!(
            "SELECT version, any(checksum) FROM {database}.schema_migrations GROUP BY version"
        ))
        .fetch_all()
        .await?;

    // On a cluster, columns that pending migrations add come with their pending tables (see
    // `cluster::added_columns`); their ALTERs then find them and are skipped.
    let mut added = Vec::new();
    if cluster.is_some() {
        for migration in MIGRATIONS {
            if !applied.iter().any(|a| a.version == migration.version) {
                added.extend(cluster::added_columns(&migration.steps(database, cluster)?));
            }
        }
    }
    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS {
        if let Some(done) = applied.iter().find(|a| a.version == migration.version) {
            if done.checksum != migration.checksum() {
                warn!(
                    version = migration.version,
                    name = migration.name,
                    "migration file changed after it was applied; changes need a new migration"
                );
            }
            continue;
        }
        let steps = migration.steps(database, cluster)?;
        let steps = steps
            .into_iter()
            .map(|step| cluster::with_columns(step, database, &added));
        for (index, step) in steps.enumerate() {
            let statement = match step {
                Step::Run(sql) => sql,
                Step::AddColumn { table, column, sql } => {
                    if column_exists(&server, database, &table, &column).await? {
                        continue;
                    }
                    sql
                }
            };
            server
                .query_raw(&statement)
                .execute()
                .await
                .map_err(|source| MigrationError::Statement {
                    version: migration.version,
                    name: migration.name,
                    index: index + 1,
                    source,
                })?;
        }
        let mut insert = client
            .clone()
            .with_database(database)
            .insert::<AppliedRecord<'_>>("schema_migrations")
            .await?;
        insert
            .write(&AppliedRecord {
                version: migration.version,
                name: migration.name,
                checksum: migration.checksum(),
                applied_at: now_s(),
            })
            .await?;
        insert.end().await?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        newly_applied.push(migration.version);
    }
    Ok(newly_applied)
}

/// `(table, column)` of an `ALTER TABLE db.table ADD COLUMN column …` statement. ClickHouse
/// 18.16 cannot say `ADD COLUMN IF NOT EXISTS`, so the runner checks for the column itself.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let mut words = statement.split_whitespace();
    let mut next_is = |word: &str| words.next().is_some_and(|w| w.eq_ignore_ascii_case(word));
    if !(next_is("ALTER") && next_is("TABLE")) {
        return None;
    }
    let table = words.next()?;
    let table = table.rsplit_once('.').map_or(table, |(_, t)| t);
    let mut next_is = |word: &str| words.next().is_some_and(|w| w.eq_ignore_ascii_case(word));
    if !(next_is("ADD") && next_is("COLUMN")) {
        return None;
    }
    Some((table, words.next()?))
}

async fn column_exists(
    server: &clickhouse::Client,
    database: &str,
    table: &str,
    column: &str,
) -> Result<bool, clickhouse::error::Error> {
    let found: u64 = server
        .query_raw(&format!(
            "SELECT count() FROM system.columns WHERE database = '{database}' \
             AND table = '{table}' AND name = '{column}'"
        ))
        .fetch_one()
        .await?;
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
        }
    }

    #[test]
    fn statements_split_at_semicolons_and_drop_comments() {
        let statements = MIGRATIONS[0].statements("t1");
        assert_eq!(statements.len(), 2);
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS t1.gateway_requests"));
        assert!(statements
            .iter()
            .all(|s| !s.contains("--") && !s.ends_with(';')));
        assert!(statements.iter().all(|s| !s.contains("{db}")));
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE db.gateway_requests ADD COLUMN event_digest UInt64"),
            Some(("gateway_requests", "event_digest"))
        );
        assert_eq!(added_column("ALTER TABLE db.t DROP COLUMN c"), None);
        assert_eq!(
            added_column("CREATE TABLE IF NOT EXISTS db.t (a UInt8)"),
            None
        );
    }

    #[test]
    fn every_statement_is_idempotent() {
        for migration in MIGRATIONS {
            for statement in migration.statements("db") {
                // Acknowledgements of alerts already published: a rerun adds duplicates of rows
                // whose presence is all that is read, so it changes nothing.
                let acknowledgements = statement.starts_with("INSERT INTO db.alert_publications");
                assert!(
                    statement.contains("IF NOT EXISTS")
                        || added_column(&statement).is_some()
                        || acknowledgements,
                    "not idempotent: {statement}"
                );
            }
        }
    }
}
