//! Silences and inhibition: what mutes an alert.
//!
//! - A **silence** mutes every alert whose labels match all its matchers while it is active
//!   (`starts_at <= now < ends_at`). It can be expired early. Silences come from the HTTP API,
//!   are kept (serde) across restarts, and are forgotten a retention period after they end.
//! - An **inhibition rule** mutes `target` alerts while a firing `source` alert has the same
//!   values for the `equal` labels (a missing label equals a missing label), e.g. a critical
//!   alert for a key mutes the warning for the same key. As in Alertmanager, an alert never
//!   inhibits itself, and when the target also matches the source side, only sources that do
//!   not match the target side count (so two alerts cannot mute each other).
//!
//! Muting is decided when a group is flushed (see `grouping`), so a silence or inhibition that
//! ends lets the alert be notified at the group's next flush.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tripline_core::config::{AlertingConfig, InhibitRuleConfig};

use crate::lifecycle::TrackedAlert;
use crate::matcher::{all_match, parse_each, Labels, Matcher, MatcherError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    /// Starts later.
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    pub fn state(&self, now: i64) -> SilenceState {
        if now >= self.ends_at_ms {
            SilenceState::Expired
        } else if now < self.starts_at_ms {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        all_match(&self.matchers, labels)
    }

    /// Active at `now` and matching.
    pub fn mutes(&self, labels: &Labels, now: i64) -> bool {
        self.state(now) == SilenceState::Active && self.matches(labels)
    }
}

/// A silence to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub matchers: Vec<Matcher>,
    /// `None`: now.
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

pub const MAX_SILENCE_MATCHERS: usize = 64;
pub const MAX_CREATED_BY_CHARS: usize = 256;
pub const MAX_COMMENT_CHARS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error("at most {MAX_SILENCE_MATCHERS} matchers (got {0})")]
    TooManyMatchers(usize),
    #[error("every matcher also matches an empty label, so the silence would mute almost everything; add one like detector=\"leaked_key\"")]
    MatchesEverything,
    #[error("ends_at must be after starts_at")]
    EndsBeforeStart,
    #[error("ends_at is in the past")]
    AlreadyEnded,
    #[error("created_by is empty")]
    NoAuthor,
    #[error("comment is empty")]
    NoComment,
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("no silence {0:?}")]
    NotFound(String),
    #[error("silence {0:?} has already expired")]
    AlreadyExpired(String),
}

/// All silences by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SilenceStore {
    silences: BTreeMap<String, Silence>,
    /// Makes ids unique without a random source.
    next_seq: u64,
}

impl SilenceStore {
    pub fn new() -> SilenceStore {
        SilenceStore::default()
    }

    /// Creates a silence; its id is `sil_` and 16 hex digits.
    pub fn create(&mut self, new: NewSilence, now: i64) -> Result<&Silence, SilenceError> {
        if new.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if new.matchers.len() > MAX_SILENCE_MATCHERS {
            return Err(SilenceError::TooManyMatchers(new.matchers.len()));
        }
        if new.matchers.iter().all(Matcher::matches_empty) {
            return Err(SilenceError::MatchesEverything);
        }
        let starts_at_ms = new.starts_at_ms.unwrap_or(now).max(now);
        if new.ends_at_ms <= starts_at_ms {
            return Err(if new.ends_at_ms <= now {
                SilenceError::AlreadyEnded
            } else {
                SilenceError::EndsBeforeStart
            });
        }
        let created_by = new.created_by.trim();
        if created_by.is_empty() {
            return Err(SilenceError::NoAuthor);
        }
        if new.comment.trim().is_empty() {
            return Err(SilenceError::NoComment);
        }
        for (field, value, max) in [
            ("created_by", created_by, MAX_CREATED_BY_CHARS),
            ("comment", new.comment.as_str(), MAX_COMMENT_CHARS),
        ] {
            if value.chars().count() > max {
                return Err(SilenceError::TooLong { field, max });
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut h = Sha256::new();
        h.update(b"tripline-silence-v1\0");
        h.update(seq.to_be_bytes());
        h.update(now.to_be_bytes());
        h.update(created_by.as_bytes());
        for m in &new.matchers {
            h.update([0]);
            h.update(m.to_string().as_bytes());
        }
        let id = format!(
            "sil_{}",
            h.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let silence = Silence {
            id: id.clone(),
            matchers: new.matchers,
            starts_at_ms,
            ends_at_ms: new.ends_at_ms,
            created_by: created_by.to_owned(),
            comment: new.comment,
            updated_at_ms: now,
        };
        Ok(self.silences.entry(id).or_insert(silence))
    }

    /// Ends a silence now: an active one stops muting, a pending one never starts.
    pub fn expire(&mut self, id: &str, now: i64) -> Result<&Silence, SilenceError> {
        let silence = self
            .silences
            .get_mut(id)
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        match silence.state(now) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_owned())),
            SilenceState::Pending => silence.starts_at_ms = now,
            SilenceState::Active => {}
        }
        silence.ends_at_ms = now;
        // Later than the copy it changes even within one millisecond, or on a host whose clock
        // is behind: other instances merge the later change (`merge`).
        silence.updated_at_ms = now.max(silence.updated_at_ms + 1);
        Ok(silence)
    }

    /// Takes a silence another instance created or changed (`[alerting.ha]`): kept when it is
    /// new here or changed later than the copy here (at the same time, the one that ends
    /// first: an expiry wins). `true` when it changed anything.
    pub fn merge(&mut self, silence: Silence) -> bool {
        match self.silences.get(&silence.id) {
            Some(known)
                if (known.updated_at_ms, silence.ends_at_ms)
                    >= (silence.updated_at_ms, known.ends_at_ms) =>
            {
                false
            }
            _ => {
                self.silences.insert(silence.id.clone(), silence);
                true
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.silences.get(id)
    }

    /// All silences, by id.
    pub fn list(&self) -> impl Iterator<Item = &Silence> {
        self.silences.values()
    }

    /// The ids of the active silences that mute these labels.
    pub fn muted_by(&self, labels: &Labels, now: i64) -> Vec<&str> {
        self.silences
            .values()
            .filter(|s| s.mutes(labels, now))
            .map(|s| s.id.as_str())
            .collect()
    }

    pub fn is_muted(&self, labels: &Labels, now: i64) -> bool {
        self.silences.values().any(|s| s.mutes(labels, now))
    }

    /// Forgets silences that ended more than `retention_ms` ago; returns how many.
    pub fn gc(&mut self, now: i64, retention_ms: i64) -> usize {
        let before = self.silences.len();
        self.silences
            .retain(|_, s| s.ends_at_ms.saturating_add(retention_ms) > now);
        before - self.silences.len()
    }

    /// The next time a silence starts or ends after `now` (muting changes then).
    pub fn next_change(&self, now: i64) -> Option<i64> {
        self.silences
            .values()
            .flat_map(|s| [s.starts_at_ms, s.ends_at_ms])
            .filter(|t| *t > now)
            .min()
    }
}

/// One inhibition rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    pub fn from_config(c: &InhibitRuleConfig) -> Result<InhibitRule, MatcherError> {
        Ok(InhibitRule {
            source: parse_each(&c.source_matchers)?,
            target: parse_each(&c.target_matchers)?,
            equal: c.equal.clone(),
        })
    }

    fn equal_values(&self, labels: &Labels) -> Vec<String> {
        self.equal
            .iter()
            .map(|l| labels.get(l).cloned().unwrap_or_default())
            .collect()
    }
}

/// The inhibition rules of the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inhibitor {
    pub rules: Vec<InhibitRule>,
}

struct Source<'a> {
    fingerprint: &'a str,
    matches_target: bool,
}

/// The firing sources of every rule, indexed by their `equal` values: built once per flush.
pub struct InhibitIndex<'a> {
    rules: &'a [InhibitRule],
    sources: Vec<HashMap<Vec<String>, Vec<Source<'a>>>>,
}

impl Inhibitor {
    pub fn from_config(config: &AlertingConfig) -> Result<Inhibitor, MatcherError> {
        let rules = config
            .inhibit_rules
            .iter()
            .map(InhibitRule::from_config)
            .collect::<Result<_, _>>()?;
        Ok(Inhibitor { rules })
    }

    /// Indexes the alerts that may inhibit: pass the firing ones
    /// (`AlertStore::firing(now)`), muted or not.
    pub fn index<'a>(
        &'a self,
        firing: impl IntoIterator<Item = &'a TrackedAlert>,
    ) -> InhibitIndex<'a> {
        let mut sources: Vec<HashMap<Vec<String>, Vec<Source<'a>>>> =
            self.rules.iter().map(|_| HashMap::new()).collect();
        for alert in firing {
            for (rule, index) in self.rules.iter().zip(&mut sources) {
                if all_match(&rule.source, &alert.labels) {
                    index
                        .entry(rule.equal_values(&alert.labels))
                        .or_default()
                        .push(Source {
                            fingerprint: &alert.fingerprint,
                            matches_target: all_match(&rule.target, &alert.labels),
                        });
                }
            }
        }
        InhibitIndex {
            rules: &self.rules,
            sources,
        }
    }
}

impl InhibitIndex<'_> {
    /// The fingerprint of a firing alert that inhibits this one, if any.
    pub fn inhibited_by(&self, fingerprint: &str, labels: &Labels) -> Option<&str> {
        for (rule, index) in self.rules.iter().zip(&self.sources) {
            if !all_match(&rule.target, labels) {
                continue;
            }
            let Some(sources) = index.get(&rule.equal_values(labels)) else {
                continue;
            };
            let two_sided = all_match(&rule.source, labels);
            if let Some(source) = sources
                .iter()
                .find(|s| s.fingerprint != fingerprint && !(two_sided && s.matches_target))
            {
                return Some(source.fingerprint);
            }
        }
        None
    }
}

/// Silences and inhibitions at one instant: what `grouping` asks before notifying an alert.
pub struct Muter<'a> {
    pub silences: &'a SilenceStore,
    pub inhibitions: InhibitIndex<'a>,
    pub now: i64,
}

impl Muter<'_> {
    pub fn is_muted(&self, alert: &TrackedAlert) -> bool {
        self.silences.is_muted(&alert.labels, self.now)
            || self
                .inhibitions
                .inhibited_by(&alert.fingerprint, &alert.labels)
                .is_some()
    }
}

#[cfg(test)]
mod tests;
