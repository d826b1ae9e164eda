//! The label matcher grammar shared by the config (`matchers = ['severity=~"warning|critical"']`)
//! and the HTTP API's silences: `name op value` with `op` one of `=`, `!=`, `=~`, `!~`.
//!
//! It lives in core because the config is validated here (a bad regex is a config error with its
//! line); `tripline_alerting::matcher` compiles these specs into matchers that test labels.
//!
//! - `name` is a Prometheus label name: `[A-Za-z_][A-Za-z0-9_]*`.
//! - `value` is double-quoted (escapes `\"`, `\\`, `\n`, `\t`; any other backslash is kept, so
//!   `"gpt-4\.1"` is the regex `gpt-4\.1`) or bare; a bare value runs to the
//!   next `,` or `}` and is trimmed, so `severity = critical` works and `a=` means "empty".
//! - Regexes are anchored at both ends, as in Alertmanager: `model=~"gpt-4.*"` matches
//!   `gpt-4o` but not `my-gpt-4o`.
//! - A list is comma-separated, optionally wrapped in `{…}`, trailing comma allowed.

use std::fmt;

use regex::{Regex, RegexBuilder};

/// The comparison a matcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`: the label equals the value (a missing label is the empty string).
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`: the whole label matches the regex.
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }

    pub fn is_regex(self) -> bool {
        matches!(self, MatchOp::Regex | MatchOp::NotRegex)
    }

    pub fn is_negative(self) -> bool {
        matches!(self, MatchOp::NotEqual | MatchOp::NotRegex)
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed (not yet compiled) matcher. A regex value has been checked to compile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatcherSpec {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

/// Why a matcher did not parse: the input and what is wrong, with a 1-based column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid matcher {input:?}: {message}")]
pub struct MatcherError {
    pub input: String,
    pub message: String,
}

/// Largest compiled regex accepted (silences come from the API, so bound them).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 64;

/// Compiles a matcher regex value, anchored at both ends. The error is one line.
pub fn matcher_regex(value: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{value})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|err| {
            let text = err.to_string();
            // regex's syntax errors are a multi-line drawing ending in "error: <what>".
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let what = last.strip_prefix("error: ").unwrap_or(last);
            format!("invalid regex {value:?}: {what}")
        })
}

/// True for a Prometheus label name.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MatcherSpec {
    /// Parses exactly one matcher, e.g. `severity=~"warning|critical"`.
    pub fn parse(text: &str) -> Result<MatcherSpec, MatcherError> {
        let mut p = Parser::new(text);
        let spec = p.matcher()?;
        p.skip_ws();
        match p.peek() {
            None => Ok(spec),
            Some(c) => Err(p.error(format!("unexpected {c:?} after the value"))),
        }
    }

    /// Parses a list: `{detector="leaked_key", severity!="info"}` or without the braces.
    pub fn parse_list(text: &str) -> Result<Vec<MatcherSpec>, MatcherError> {
        let mut p = Parser::new(text);
        p.skip_ws();
        let braced = p.eat('{');
        let mut out = Vec::new();
        loop {
            p.skip_ws();
            match p.peek() {
                None if braced => return Err(p.error("missing closing '}'".into())),
                None => break,
                Some('}') if braced => {
                    p.bump();
                    break;
                }
                _ => {}
            }
            out.push(p.matcher()?);
            p.skip_ws();
            if !p.eat(',') {
                match p.peek() {
                    None if !braced => break,
                    Some('}') if braced => {}
                    None => return Err(p.error("missing closing '}'".into())),
                    Some(c) => return Err(p.error(format!("expected ',' but found {c:?}"))),
                }
            }
        }
        p.skip_ws();
        match p.peek() {
            None => Ok(out),
            Some(c) => Err(p.error(format!("unexpected {c:?} after the list"))),
        }
    }
}

/// Formats as it parses: `name="value"` with the value quoted and escaped.
impl fmt::Display for MatcherSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op)?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, what: String) -> MatcherError {
        self.error_at(self.pos, what)
    }

    fn error_at(&self, pos: usize, what: String) -> MatcherError {
        MatcherError {
            input: self.input.to_owned(),
            message: format!("{what} (column {})", pos + 1),
        }
    }

    fn matcher(&mut self) -> Result<MatcherSpec, MatcherError> {
        self.skip_ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if name.is_empty() {
            return Err(match self.peek() {
                None => self.error("expected a label name".into()),
                Some(c) => self.error(format!("expected a label name but found {c:?}")),
            });
        }
        if !is_label_name(&name) {
            return Err(self.error_at(
                start,
                format!("{name:?} is not a label name (letters, digits and '_', not starting with a digit)"),
            ));
        }
        self.skip_ws();
        let op_pos = self.pos;
        let op = match (self.bump(), self.peek()) {
            (Some('='), Some('~')) => {
                self.pos += 1;
                MatchOp::Regex
            }
            (Some('!'), Some('~')) => {
                self.pos += 1;
                MatchOp::NotRegex
            }
            (Some('!'), Some('=')) => {
                self.pos += 1;
                MatchOp::NotEqual
            }
            (Some('='), _) => MatchOp::Equal,
            _ => {
                return Err(self.error_at(
                    op_pos,
                    format!("expected an operator (=, !=, =~, !~) after {name:?}"),
                ))
            }
        };
        self.skip_ws();
        let value_pos = self.pos;
        let value = if self.eat('"') {
            self.quoted()?
        } else {
            let start = self.pos;
            while self.peek().is_some_and(|c| !matches!(c, ',' | '}')) {
                self.pos += 1;
            }
            let raw: String = self.chars[start..self.pos].iter().collect();
            let raw = raw.trim_end().to_owned();
            if raw.contains('"') {
                return Err(self.error_at(value_pos, "a quote inside a bare value".into()));
            }
            if raw.starts_with(['=', '~', '!']) {
                return Err(self.error_at(
                    value_pos,
                    format!(
                        "{:?} is not an operator (=, !=, =~, !~)",
                        format!("{op}{}", &raw[..1])
                    ),
                ));
            }
            raw
        };
        if op.is_regex() {
            matcher_regex(&value).map_err(|message| self.error_at(value_pos, message))?;
        }
        Ok(MatcherSpec { name, op, value })
    }

    /// The rest of a double-quoted string, the opening quote already read.
    fn quoted(&mut self) -> Result<String, MatcherError> {
        let open = self.pos - 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error_at(open, "unterminated quoted value".into())),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    // Any other escape is kept as written, so regexes read naturally:
                    // `model=~"gpt-4\.1"` (Alertmanager does the same).
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err(self.error_at(open, "unterminated quoted value".into())),
                },
                Some(c) => out.push(c),
            }
        }
    }
}
