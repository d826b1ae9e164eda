//! The dashboard query files (`dashboards/queries/*.sql`), read as the dashboards run them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn query_path(name: &str) -> PathBuf {
    repo()
        .join("dashboards/queries")
        .join(format!("{name}.sql"))
}

/// The query file without whole-line comments and its final `;`, parameters substituted; panics
/// on a `{parameter}` left without a value.
pub fn query_sql(name: &str, params: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(query_path(name)).unwrap();
    let mut sql = strip_comments(&text);
    for (param, value) in params {
        sql = sql.replace(&format!("{{{param}}}"), value);
    }
    assert!(
        placeholders(&sql).is_empty(),
        "{name}.sql: no value for {:?}",
        placeholders(&sql)
    );
    sql
}

pub fn strip_comments(text: &str) -> String {
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
        .collect();
    body.join("\n")
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .to_owned()
}

/// `{name}` placeholders in `text` (not `${name}`, Grafana's template variables).
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    for (start, _) in text.match_indices('{') {
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        if let Some(len) = text[start + 1..].find('}') {
            let name = &text[start + 1..start + 1 + len];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

pub fn query_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("dashboards/queries"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .path()
                .file_name()?
                .to_str()?
                .strip_suffix(".sql")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}
