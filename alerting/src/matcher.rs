//! Label matchers (`name=value`, `!=`, `=~`, `!~`), compiled and ready to test an alert's
//! labels. The grammar (and its error messages) is `tripline_core::config::MatcherSpec`'s,
//! shared with config validation.
//!
//! As in Alertmanager, a missing label reads as the empty string: `team=""` matches alerts
//! without a `team`, `team!=""` only alerts that have one, and regexes are anchored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
pub use tripline_core::config::{MatchOp, MatcherError, MatcherSpec};

/// Labels as the alerting stages see them: the contract labels plus `severity`.
pub type Labels = BTreeMap<String, String>;

/// One compiled matcher. Serialized as its text, e.g. `"severity=~\"warning|critical\""`.
#[derive(Debug, Clone)]
pub struct Matcher {
    spec: MatcherSpec,
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; a regex value must compile (anchored).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        Matcher::from_spec(MatcherSpec {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
        })
    }

    /// Parses one matcher, e.g. `severity=~"warning|critical"`.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        Matcher::from_spec(MatcherSpec::parse(text)?)
    }

    pub fn from_spec(spec: MatcherSpec) -> Result<Matcher, MatcherError> {
        if !tripline_core::config::is_label_name(&spec.name) {
            return Err(MatcherError {
                input: spec.to_string(),
                message: format!("{:?} is not a label name", spec.name),
            });
        }
        let regex = if spec.op.is_regex() {
            let regex = tripline_core::config::matcher_regex(&spec.value).map_err(|message| {
                MatcherError {
                    input: spec.to_string(),
                    message,
                }
            })?;
            Some(regex)
        } else {
            None
        };
        Ok(Matcher { spec, regex })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn op(&self) -> MatchOp {
        self.spec.op
    }

    pub fn value(&self) -> &str {
        &self.spec.value
    }

    pub fn spec(&self) -> &MatcherSpec {
        &self.spec
    }

    /// Whether the label's value (None: absent, read as "") satisfies the matcher.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.spec.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.spec.value,
            (MatchOp::NotEqual, _) => value != self.spec.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // from_spec always compiles regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.spec.name).map(String::as_str))
    }

    /// Whether the matcher also matches an alert without this label (as `x=""` or `x!="y"`
    /// do). A silence made only of such matchers would mute almost everything.
    pub fn matches_empty(&self) -> bool {
        self.matches_value(None)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec.fmt(f)
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Matcher::parse(s)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Matchers that must all match (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses config strings, one matcher each.
pub fn parse_each(texts: &[String]) -> Result<Vec<Matcher>, MatcherError> {
    texts.iter().map(|t| Matcher::parse(t)).collect()
}

/// Parses a list such as `{detector="leaked_key", severity!="info"}` (braces optional).
pub fn parse_list(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    MatcherSpec::parse_list(text)?
        .into_iter()
        .map(Matcher::from_spec)
        .collect()
}

/// `{a="1", b=~"x"}`: a list of matchers as text (parses back with [`parse_list`]).
pub fn list_to_string(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests;
