//! Finds where a key of the `[alerting]` section is written, for error messages. Unlike the
//! flat sections it understands arrays of tables (`[[alerting.route.routes]]`, nested too):
//! the n-th `[[a.b]]` header under the current parent element is `a.b[n]`.

use std::collections::HashMap;

/// Line and column (1-based) of `field = …` in table `table` (e.g.
/// `alerting.route.routes[1]`), else of the table's header, else `None`.
pub(super) fn locate(text: &str, table: &str, field: &str) -> Option<(usize, usize)> {
    // Next index per array path (the path includes its parents' indices).
    let mut counts: HashMap<String, usize> = HashMap::new();
    // The current element of each array path, for headers and keys below it.
    let mut current: HashMap<String, usize> = HashMap::new();
    let mut here = String::new();
    let mut header = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let column = line.len() - trimmed.len() + 1;
        if let Some(rest) = trimmed.strip_prefix("[[") {
            let Some(end) = rest.find("]]") else { continue };
            let segments = split_key(&rest[..end]);
            let Some((last, parents)) = segments.split_last() else {
                continue;
            };
            let parent = resolve(parents, &current);
            let path = join(&parent, last);
            let count = counts.entry(path.clone()).or_insert(0);
            let n = *count;
            *count += 1;
            current.insert(path.clone(), n);
            here = format!("{path}[{n}]");
        } else if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(end) = rest.find(']') else { continue };
            here = resolve(&split_key(&rest[..end]), &current);
        } else if trimmed.starts_with('#') {
            continue;
        } else if let Some((key, _)) = trimmed.split_once('=') {
            let segments = split_key(key);
            if let Some((name, dotted)) = segments.split_last() {
                let mut table_here = here.clone();
                for segment in dotted {
                    table_here = join(&table_here, segment);
                }
                if table_here == table && name == field {
                    return Some((index + 1, column));
                }
            }
            continue;
        } else {
            continue;
        }
        if here == table && header.is_none() {
            header = Some((index + 1, column));
        }
    }
    header
}

/// The indexed path of plain segments: `alerting.route.routes` → `alerting.route.routes[2]`
/// when the third `[[alerting.route.routes]]` is the current element.
fn resolve(segments: &[String], current: &HashMap<String, usize>) -> String {
    let mut path = String::new();
    for segment in segments {
        path = join(&path, segment);
        if let Some(n) = current.get(&path) {
            path = format!("{path}[{n}]");
        }
    }
    path
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}

/// `a . "b.c" .d` → `["a", "b.c", "d"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut part = String::new();
    let mut quote = None;
    for c in key.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => out.push(std::mem::take(&mut part).trim().to_owned()),
            (None, c) if c.is_whitespace() => {}
            _ => part.push(c),
        }
    }
    out.push(part.trim().to_owned());
    out
}
