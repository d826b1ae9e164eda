//! From a config file's text to a [`Config`], or to every problem in it, each with its place
//! (line, column and dotted key) and a hint saying how to fix it.
//!
//! The file is parsed once into a spanned document tree. Syntax errors are all reported at
//! once. Serde then deserializes the tree; each error it stops at (unknown key, wrong type,
//! unknown choice, missing field) is recorded, the offending entry is taken out of the tree and
//! deserialization runs again, so every such error is reported, not only the first. The value
//! checks ([`Config::validate`]) then run on what is left, and locate their keys in the same tree.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::{Config, ConfigError};

/// At most this many parse errors are collected before giving up (a file that is not a
/// Tripline config at all would otherwise list every line).
const MAX_PARSE_ERRORS: usize = 50;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// `alerting.receivers[1].url`, `detect.keys."a.b".min_abs_usd` → segments.
pub(crate) fn parse_path(dotted: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    let mut chars = dotted.chars().peekable();
    let flush = |part: &mut String, out: &mut Vec<Seg>| {
        if !part.is_empty() {
            out.push(Seg::Key(std::mem::take(part)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' if !quoted && part.is_empty() => {
                // A quoted key: up to the matching quote, taken as written.
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    part.push(q);
                }
                out.push(Seg::Key(std::mem::take(&mut part)));
                quoted = true;
            }
            '.' => {
                flush(&mut part, &mut out);
                quoted = false;
            }
            '[' => {
                flush(&mut part, &mut out);
                let mut index = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    index.push(d);
                }
                if let Ok(n) = index.trim().parse() {
                    out.push(Seg::Index(n));
                }
            }
            c if c.is_whitespace() => {}
            c => part.push(c),
        }
    }
    flush(&mut part, &mut out);
    out
}

/// Segments → the dotted form used in messages (keys quoted when they are not bare).
pub(crate) fn format_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&quote_key(key));
            }
            Seg::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// A key as TOML writes it: bare when it can be, else in double quotes.
pub fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// The file's text and its spanned document tree, for finding where keys are written.
pub(crate) struct Source<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
    /// The defaults, serialized: to say what a key's default is.
    defaults: toml::Value,
}

impl<'a> Source<'a> {
    /// The text (possibly with syntax errors: what could be recovered is used).
    pub(crate) fn new(text: &'a str) -> Self {
        let (root, _) = DeTable::parse_recoverable(text);
        Self::with_root(text, root)
    }

    fn with_root(text: &'a str, root: Spanned<DeTable<'a>>) -> Self {
        Self {
            text,
            root,
            defaults: defaults(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Where `dotted` is written: its value; else the header (or key) of the nearest enclosing
    /// table that is in the file; `None` when not even its section is.
    pub(crate) fn locate(&self, dotted: &str) -> Option<(usize, usize)> {
        enum Cursor<'t, 'i> {
            Table(&'t DeTable<'i>),
            Array(&'t DeArray<'i>),
            Leaf,
        }
        let mut cursor = Cursor::Table(self.root.get_ref());
        let mut found: Option<Range<usize>> = None;
        for seg in parse_path(dotted) {
            let next = match (&seg, cursor) {
                (Seg::Key(key), Cursor::Table(table)) => {
                    table.get_key_value(key.as_str()).map(|(k, v)| {
                        // A table opened by a header points at its `[`; one that exists only
                        // through a dotted key points at that key.
                        let span = if v.get_ref().is_table() && !self.is_header(v.span()) {
                            k.span()
                        } else {
                            v.span()
                        };
                        (span, v)
                    })
                }
                (Seg::Index(n), Cursor::Array(items)) => items.get(*n).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((span, next)) = next else { break };
            found = Some(span);
            cursor = match next.get_ref() {
                DeValue::Table(t) => Cursor::Table(t),
                DeValue::Array(a) => Cursor::Array(a),
                _ => Cursor::Leaf,
            };
        }
        found.map(|span| self.position(span.start))
    }

    fn is_header(&self, span: Range<usize>) -> bool {
        self.text
            .get(span)
            .is_some_and(|t| t.trim_start().starts_with('['))
    }

    /// The default of `dotted` as TOML (`50000`, `"127.0.0.1:9898"`), when it has a plain one.
    pub(crate) fn default_of(&self, dotted: &str) -> Option<String> {
        let mut value = &self.defaults;
        for seg in parse_path(dotted) {
            value = match (seg, value) {
                (Seg::Key(key), toml::Value::Table(t)) => t.get(&key)?,
                _ => return None,
            };
        }
        match value {
            toml::Value::Table(_) => None,
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => None,
            other => Some(other.to_string()),
        }
    }

    /// A located error for a value check, with the key's default added to the hint.
    pub(crate) fn error(&self, key: &str, message: String, hint: &str) -> ConfigError {
        let (line, column) = self.locate(key).unzip();
        let mut hint = hint.to_owned();
        if !hint.contains("default") {
            if let Some(default) = self.default_of(key) {
                if hint.is_empty() {
                    hint = format!("the default is {default}");
                } else {
                    hint = format!("{hint} (default: {default})");
                }
            }
        }
        if hint.is_empty() {
            hint = "see tripline.example.toml for what this key takes".to_owned();
        }
        ConfigError {
            file: None,
            env: None,
            line,
            column,
            key: key.to_owned(),
            message,
            hint,
        }
    }

    /// Every table a header (`[a.b]`, `[[a.b]]`) opens, as (header offset, path), in file order.
    fn headers(&self) -> Vec<(usize, Vec<Seg>)> {
        fn walk(
            source: &Source,
            table: &DeTable,
            path: &mut Vec<Seg>,
            out: &mut Vec<(usize, Vec<Seg>)>,
        ) {
            for (key, value) in table.iter() {
                path.push(Seg::Key(key.get_ref().to_string()));
                match value.get_ref() {
                    DeValue::Table(t) => {
                        if source.is_header(value.span()) {
                            out.push((value.span().start, path.clone()));
                        }
                        walk(source, t, path, out);
                    }
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if let DeValue::Table(t) = item.get_ref() {
                                path.push(Seg::Index(i));
                                if source.is_header(item.span()) {
                                    out.push((item.span().start, path.clone()));
                                }
                                walk(source, t, path, out);
                                path.pop();
                            }
                        }
                    }
                    _ => {}
                }
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, self.root.get_ref(), &mut Vec::new(), &mut out);
        out.sort_by_key(|(offset, _)| *offset);
        out
    }

    /// The key a syntax error at `offset` is in, as far as it can be told: the enclosing
    /// table's path and the key written on that line.
    fn key_around(&self, offset: usize) -> String {
        let line_start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let line = self.text[line_start..line_end].trim();
        if let Some(header) = line.strip_prefix('[') {
            return header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        }
        let mut path = self
            .headers()
            .into_iter()
            .rev()
            .find(|(start, _)| *start < line_start)
            .map(|(_, path)| path)
            .unwrap_or_default();
        if let Some((key, _)) = line.split_once('=') {
            if !key.trim().is_empty() {
                path.extend(parse_path(key.trim()));
            }
        }
        format_path(&path)
    }
}

/// The defaults as a TOML tree.
fn defaults() -> toml::Value {
    toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(Default::default()))
}

/// Parses `text` into a config; `Err` holds every syntax and schema error found, followed by
/// the value errors of what could still be read. `validate` runs the value checks.
pub(super) fn parse(
    text: &str,
    validate: impl FnOnce(&mut Config, &Source) -> Vec<ConfigError>,
) -> Result<Config, Vec<ConfigError>> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let source = Source::with_root(text, root);
    if !syntax.is_empty() {
        let mut errors: Vec<ConfigError> = syntax
            .iter()
            .map(|err| syntax_error(&source, err))
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup_by(|a, b| a.line == b.line && a.message == b.message);
        return Err(errors);
    }

    let mut tree = source.root.clone();
    let mut errors = Vec::new();
    // Paths taken out of the tree, and the tables whose value checks they make unreliable.
    let mut scopes: Vec<Vec<Seg>> = Vec::new();
    let parsed = loop {
        match Config::deserialize(toml::de::Deserializer::from(tree.clone())) {
            Ok(config) => break Some(config),
            Err(err) => {
                let found = err
                    .span()
                    .and_then(|span| find_by_span(tree.get_ref(), &span, &mut Vec::new()));
                let Some(path) = found else {
                    errors.push(schema_error(&source, &err, Vec::new()));
                    break None;
                };
                let error = schema_error(&source, &err, path.clone());
                // A required field taken out for a bad value comes back as missing: said once.
                if !errors.iter().any(|e: &ConfigError| e.key == error.key) {
                    errors.push(error);
                }
                if errors.len() >= MAX_PARSE_ERRORS || !remove(&mut tree, &path) {
                    break None;
                }
                // An unknown key changes nothing when taken out; a bad value falls back to its
                // default, which the value checks of its neighbours should not be judged by.
                if !err.message().starts_with("unknown field") {
                    scopes.push(scope_of(&path));
                }
            }
        }
    };
    let Some(mut config) = parsed else {
        return Err(errors);
    };
    let checks = validate(&mut config, &source);
    errors.extend(checks.into_iter().filter(|e| {
        let key = parse_path(&e.key);
        !scopes.iter().any(|scope| key.starts_with(scope))
    }));
    // In file order; problems that come from the environment (no line) last.
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// The value checks that a removed entry makes unreliable: its table's, or for anything in an
/// array of tables (receivers, routes), its whole section's (they refer to one another).
fn scope_of(path: &[Seg]) -> Vec<Seg> {
    if path.iter().any(|s| matches!(s, Seg::Index(_))) {
        path[..1].to_vec()
    } else {
        path[..path.len().saturating_sub(1)].to_vec()
    }
}

/// The path of the entry whose key or value has exactly this span.
fn find_by_span(table: &DeTable, span: &Range<usize>, path: &mut Vec<Seg>) -> Option<Vec<Seg>> {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        if key.span() == *span {
            return Some(path.clone());
        }
        if let Some(found) = find_in_value(value, span, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

fn find_in_value(
    value: &Spanned<DeValue>,
    span: &Range<usize>,
    path: &mut Vec<Seg>,
) -> Option<Vec<Seg>> {
    // Deeper matches first: an implicit table's span is its key's.
    match value.get_ref() {
        DeValue::Table(t) => {
            if let Some(found) = find_by_span(t, span, path) {
                return Some(found);
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(found) = find_in_value(item, span, path) {
                    return Some(found);
                }
                path.pop();
            }
        }
        _ => {}
    }
    (value.span() == *span).then(|| path.clone())
}

/// Takes the entry at `path` out of the tree; `false` when it is not there.
fn remove(tree: &mut Spanned<DeTable>, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut value: &mut DeValue = match parents.first() {
        None => {
            return match last {
                Seg::Key(key) => tree.get_mut().remove(key.as_str()).is_some(),
                Seg::Index(_) => false,
            }
        }
        Some(Seg::Key(key)) => match tree.get_mut().get_mut(key.as_str()) {
            Some(v) => v.get_mut(),
            None => return false,
        },
        Some(Seg::Index(_)) => return false,
    };
    for seg in &parents[1..] {
        value = match (seg, value) {
            (Seg::Key(key), DeValue::Table(t)) => match t.get_mut(key.as_str()) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            (Seg::Index(n), DeValue::Array(items)) => match items.get_mut(*n) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, value) {
        (Seg::Key(key), DeValue::Table(t)) => t.remove(key.as_str()).is_some(),
        (Seg::Index(n), DeValue::Array(items)) if *n < items.len() => {
            let mut kept = DeArray::new();
            for (i, item) in items.iter().enumerate() {
                if i != *n {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            true
        }
        _ => false,
    }
}

fn syntax_error(source: &Source, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |s| s.start);
    let (line, column) = source.position(offset);
    let message = err.message().to_owned();
    let hint = if message.contains("duplicate key") {
        "a key may be set only once in a table: delete one of the two"
    } else if message.contains("must be quoted") {
        "text values go in double quotes: key = \"value\""
    } else if message.contains("unclosed table") || message.contains("unclosed array") {
        "close it: a table header is [name] (or [[name]] for a list entry) on a line of its own, an array is [a, b]"
    } else if message.contains("unclosed") || message.contains("unterminated") {
        "close the string with the quote it opened with (''' or \"\"\" for several lines)"
    } else if message.contains("expected `=`") || message.contains("key with no value") {
        "each setting is key = value on its own line"
    } else {
        "TOML syntax: key = value, text in quotes, tables as [name]; compare with tripline.example.toml"
    };
    ConfigError {
        file: None,
        env: None,
        line: Some(line),
        column: Some(column),
        key: source.key_around(offset),
        message: format!("TOML syntax: {message}"),
        hint: hint.to_owned(),
    }
}

/// A serde error at `path`: unknown key, wrong type, unknown choice or missing field.
fn schema_error(source: &Source, err: &toml::de::Error, path: Vec<Seg>) -> ConfigError {
    let message = err.message();
    let (line, column) = err.span().map(|span| source.position(span.start)).unzip();
    let mut key_path = path.clone();
    let (message, hint) = if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let expected = ticked(rest.split_once("expected").map_or("", |(_, e)| e));
        unknown_key(source, &path, name, &expected)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        let name = rest.split('`').next().unwrap_or_default();
        let expected = ticked(rest.split_once("expected").map_or("", |(_, e)| e));
        let choices = expected.join(", ");
        let hint = match suggest(name, &expected) {
            Some(best) => format!("did you mean \"{best}\"? One of: {choices}"),
            None => format!("one of: {choices}"),
        };
        (format!("\"{name}\" is not one of the choices"), hint)
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        key_path.push(Seg::Key(field.to_owned()));
        let table = format_path(&path);
        let hint = match field {
            "kind" => "add kind = \"webhook\", \"slack\" or \"email\"".to_owned(),
            "name" => "add name = \"...\": routes refer to receivers by name".to_owned(),
            "source_matchers" | "target_matchers" => {
                format!("add {field} = ['severity=\"critical\"'] (label matchers)")
            }
            _ => format!("add {field} = ... to this table; see tripline.example.toml"),
        };
        (format!("{table} needs `{field}`"), hint)
    } else if message.starts_with("invalid type: ") || message.starts_with("invalid value: ") {
        let body = message.split_once(": ").map_or(message, |(_, b)| b);
        let (found, expected) = body.split_once(", expected ").unwrap_or((body, ""));
        let wanted = human_type(expected);
        let dotted = format_path(&path);
        let hint = match (source.default_of(&dotted), path.last()) {
            (Some(default), Some(Seg::Key(name))) => {
                format!(
                    "write {wanted}, e.g. {} = {default} (the default)",
                    quote_key(name)
                )
            }
            _ => format!("write {wanted}"),
        };
        (format!("expected {wanted}, found {found}"), hint)
    } else {
        (
            message.to_owned(),
            "compare with tripline.example.toml".to_owned(),
        )
    };
    ConfigError {
        file: None,
        env: None,
        line,
        column,
        key: format_path(&key_path),
        message,
        hint,
    }
}

fn unknown_key(source: &Source, path: &[Seg], name: &str, expected: &[String]) -> (String, String) {
    let parent = &path[..path.len().saturating_sub(1)];
    let table = format_path(parent);
    let message = if table.is_empty() {
        format!("unknown section `{name}`")
    } else {
        format!("unknown key `{name}` in [{table}]")
    };
    let listing = if expected.is_empty() {
        format!("[{table}] takes no keys")
    } else if table.is_empty() {
        format!("sections: {}", expected.join(", "))
    } else {
        format!("keys in [{table}]: {}", expected.join(", "))
    };
    // The same key in another table ("min_abs_usd" in [detect.spend_spike] instead of
    // [detect.spend_spike.model]) is the likeliest mistake; then a close spelling.
    let elsewhere = find_key(&source.defaults, name, &mut Vec::new())
        .into_iter()
        .filter(|p| p[..p.len() - 1] != *parent)
        .min_by_key(|p| p.len());
    let hint = match (elsewhere, suggest(name, expected)) {
        (Some(p), _) => format!(
            "`{name}` belongs in [{}]: did you mean `{}`?",
            format_path(&p[..p.len() - 1]),
            format_path(&p)
        ),
        (None, Some(best)) => format!("did you mean `{best}`? {listing}"),
        (None, None) => listing,
    };
    (message, hint)
}

/// Every path in the defaults that ends in `name`.
fn find_key(value: &toml::Value, name: &str, path: &mut Vec<Seg>) -> Vec<Vec<Seg>> {
    let mut out = Vec::new();
    if let toml::Value::Table(table) = value {
        for (key, child) in table {
            path.push(Seg::Key(key.clone()));
            if key == name {
                out.push(path.clone());
            }
            out.extend(find_key(child, name, path));
            path.pop();
        }
    }
    out
}

/// The names between backticks: "`a`, `b` or `c`" → [a, b, c].
fn ticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The closest of `choices` to `name`: within a small edit distance, else the shortest one
/// that has every word of `name` (`batch_rows` → `batch_max_rows`).
pub(crate) fn suggest<'c>(name: &str, choices: &'c [String]) -> Option<&'c str> {
    let name = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(2);
    let close = choices
        .iter()
        .map(|c| (edit_distance(&name, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str());
    close.or_else(|| {
        let words: Vec<&str> = name
            .split(['_', '-', '.'])
            .filter(|w| !w.is_empty())
            .collect();
        choices
            .iter()
            .filter(|c| {
                let c = c.to_lowercase();
                let theirs: Vec<&str> = c.split(['_', '-', '.']).collect();
                words.len() > 1 && words.iter().all(|w| theirs.contains(w))
            })
            .min_by_key(|c| c.len())
            .map(String::as_str)
    })
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Serde's type names in words.
fn human_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "a string in quotes".to_owned(),
        "a sequence" => "an array, e.g. [\"a\", \"b\"]".to_owned(),
        "a map" => "a table".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e if e.starts_with("enum ") => "one of the listed words, in quotes".to_owned(),
        "" => "another kind of value".to_owned(),
        other => other.to_owned(),
    }
}
