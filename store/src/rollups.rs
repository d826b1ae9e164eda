//! The per-minute rollups as data: which table each materialized view fills, from which raw
//! table, with which SELECT. Read from the migrations themselves, so that code re-deriving a
//! rollup (ingest's repair after a failed view) can never drift from what the view computes.

use crate::migrate::MIGRATIONS;

// The rollup tables, as `0002_minute_rollups.sql` names them (the test below checks them
// against the views the migrations create), for code that reads them.

/// Per minute and API key, from the gateway's requests.
pub const KEY_ROLLUP_TABLE: &str = "rollup_key_1m";
/// Per minute and project, from the gateway's requests.
pub const PROJECT_ROLLUP_TABLE: &str = "rollup_project_1m";
/// Per minute and provider/model, from the gateway's requests (what clients saw).
pub const MODEL_ROLLUP_TABLE: &str = "rollup_model_1m";
/// Per minute and provider/model, from the upstream attempts (what the gateway did).
pub const PROVIDER_ROLLUP_TABLE: &str = "rollup_provider_1m";

/// Stands for the database while parsing; views are re-derived in the client's own database.
const DB: &str = "__tripline_db__";

/// One `CREATE MATERIALIZED VIEW … TO target AS SELECT … FROM source GROUP BY …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupView {
    /// The rollup table the view writes to.
    pub target: String,
    /// The raw table it reads.
    pub source: String,
    /// The SELECT list, one `expression AS column` per item, in the view's order.
    pub items: Vec<SelectItem>,
    /// The GROUP BY columns (names of items, or raw columns).
    pub group_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectItem {
    pub expression: String,
    pub column: String,
}

impl RollupView {
    /// The expression a GROUP BY column stands for in the raw table (`toStartOfMinute(ts)`
    /// for `minute`, the column itself otherwise).
    pub fn group_expression(&self, column: &str) -> String {
        self.items
            .iter()
            .find(|item| item.column == column)
            .map_or_else(|| column.to_owned(), |item| item.expression.clone())
    }

    /// The rollup column holding `countState()`: the number of raw rows folded into a cell.
    pub fn count_column(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|item| item.expression == "countState()")
            .map(|item| item.column.as_str())
    }

    /// `INSERT INTO target (…) SELECT … FROM source WHERE <filter> GROUP BY …`: what the view
    /// would have inserted for the raw rows that `filter` selects.
    pub fn insert_select(&self, filter: &str) -> String {
        let columns: Vec<&str> = self.items.iter().map(|i| i.column.as_str()).collect();
        let select: Vec<String> = self
            .items
            .iter()
            .map(|i| format!("{} AS {}", i.expression, i.column))
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} GROUP BY {}",
            self.target,
            columns.join(", "),
            select.join(", "),
            self.source,
            filter,
            self.group_by.join(", ")
        )
    }
}

/// Every rollup view the migrations create, with unqualified table names.
pub fn rollup_views() -> Vec<RollupView> {
    MIGRATIONS
        .iter()
        .flat_map(|migration| migration.statements(DB))
        .filter_map(|statement| parse_view(&statement))
        .collect()
}

fn parse_view(statement: &str) -> Option<RollupView> {
    let unqualified = statement.replace(&format!("{DB}."), "");
    let rest = unqualified.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ")?;
    let (_, rest) = rest.split_once(" TO ")?;
    let (target, rest) = rest.split_once(" AS\n")?;
    let rest = rest.strip_prefix("SELECT\n")?;
    let (select, rest) = rest.split_once("\nFROM ")?;
    let (source, group_by) = rest.split_once("\nGROUP BY ")?;
    let items = select
        .lines()
        .map(|line| {
            let item = line.trim().trim_end_matches(',');
            match item.rsplit_once(" AS ") {
                Some((expression, column)) => SelectItem {
                    expression: expression.trim().to_owned(),
                    column: column.trim().to_owned(),
                },
                None => SelectItem {
                    expression: item.to_owned(),
                    column: item.to_owned(),
                },
            }
        })
        .collect();
    Some(RollupView {
        target: target.trim().to_owned(),
        source: source.trim().to_owned(),
        items,
        group_by: group_by.split(',').map(|c| c.trim().to_owned()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rollup_view_is_read_from_the_migrations() {
        let views = rollup_views();
        let targets: Vec<&str> = views.iter().map(|v| v.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                KEY_ROLLUP_TABLE,
                PROJECT_ROLLUP_TABLE,
                MODEL_ROLLUP_TABLE,
                PROVIDER_ROLLUP_TABLE
            ]
        );
        for view in &views {
            assert!(view.count_column().is_some(), "{view:?}");
            assert_eq!(view.group_expression("minute"), "toStartOfMinute(ts)");
            assert!(
                view.items.iter().all(|i| !i.column.contains(' ')),
                "{view:?}"
            );
        }
        let key = &views[0];
        assert_eq!(key.source, "gateway_requests");
        assert_eq!(key.group_by, ["minute", "api_key_id"]);
        assert_eq!(key.group_expression("api_key_id"), "api_key_id");
        assert_eq!(key.count_column(), Some("requests"));
        assert_eq!(views[3].source, "provider_attempts");
        assert_eq!(views[3].count_column(), Some("attempts"));
    }

    #[test]
    fn insert_select_names_its_columns() {
        let view = &rollup_views()[0];
        let sql = view.insert_select("event_id = 'e1'");
        assert!(sql.starts_with("INSERT INTO rollup_key_1m (minute, api_key_id, project, requests"));
        assert!(sql.contains("toStartOfMinute(ts) AS minute"));
        assert!(sql.contains(
            "quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_ms FROM gateway_requests"
        ));
        assert!(sql.ends_with("WHERE event_id = 'e1' GROUP BY minute, api_key_id"));
    }
}
