//! `[alerting]`: the alert lifecycle (`for`, `keep_firing_for`, resolve timeout, flapping), the
//! routing tree, receivers and inhibition rules. Alertmanager's model, with units in the names.
//!
//! An empty section (no receivers) means alerting is off: nothing is routed anywhere.
//! Silences are not configured here; they are created through the HTTP API and persisted.

use serde::{Deserialize, Serialize};

use super::diagnose::Source;
use super::ConfigError;

mod matchers;
mod validate;
pub use matchers::{is_label_name, matcher_regex, MatchOp, MatcherError, MatcherSpec};

/// Root route defaults, inherited by every child route that does not set its own.
pub const DEFAULT_GROUP_WAIT_MS: u64 = 30_000;
/// The detectors whose alerts mean someone else may be using a key (a compromise, not a cost
/// or reliability trend). Unless the routing tree sets `group_by` or `group_wait_ms`, each of
/// their alerts is a group of its own and waits only `DEFAULT_SECURITY_GROUP_WAIT_MS` before
/// its first notification: a stolen key is paged at once, and never waits for another key's
/// group to come round again (`group_interval_ms`).
pub const SECURITY_DETECTORS: [&str; 2] = ["leaked_key", "cross_region"];
/// `group_wait_ms` of a security detector's group when the routing tree sets none: one
/// detector cycle, so that what one cycle decides together (a critical alert and the warnings
/// an inhibition rule mutes under it) arrives together, and no longer.
pub const DEFAULT_SECURITY_GROUP_WAIT_MS: u64 = 5_000;
pub const DEFAULT_GROUP_INTERVAL_MS: u64 = 300_000;
pub const DEFAULT_REPEAT_INTERVAL_S: u64 = 4 * 3_600;
/// `[alerting] state_dir` unless set.
pub const DEFAULT_STATE_DIR: &str = ".run/alerting";
/// One group per detector unless the root route says otherwise (per alert for the
/// `SECURITY_DETECTORS`).
pub const DEFAULT_GROUP_BY: [&str; 1] = ["detector"];
/// `group_by = ["..."]` groups by every label: one group per alert.
pub const GROUP_BY_ALL: &str = "...";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Where Tripline's API/UI is reachable, for links in notifications.
    pub external_url: Option<String>,
    /// An alert is pending this long after its first firing message before it notifies
    /// (routes may override it with their own `for_ms`). 0: it fires at once.
    pub for_ms: u64,
    /// A resolved message keeps the alert firing this long; a firing message within it
    /// continues the same alert, so a short dip does not resolve and re-page. 0: off.
    pub keep_firing_for_ms: u64,
    /// A firing alert with no message from its detector for this long resolves. 0 (default):
    /// off, only explicit resolved messages resolve, because the detectors publish only state
    /// changes (firing, escalation, resolved) and never repeat a firing alert.
    pub resolve_timeout_s: u64,
    /// Resolved alerts stay listed (API) this long before they are forgotten.
    pub resolved_retention_s: u64,
    /// Expired silences stay listed this long before they are forgotten.
    pub silence_retention_s: u64,
    /// Where `tripline alert` keeps its state (alerts, groups, silences and the outbox of
    /// notifications not yet delivered) so that a restart, kill -9 included, loses nothing.
    /// Relative to the config file's directory. One directory per alerting process.
    pub state_dir: String,
    /// Several `tripline alert` processes, one active (`[alerting.ha]`). Read at start.
    pub ha: HaConfig,
    pub flapping: FlappingConfig,
    pub route: RouteConfig,
    pub receivers: Vec<ReceiverConfig>,
    pub inhibit_rules: Vec<InhibitRuleConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            external_url: None,
            for_ms: 0,
            keep_firing_for_ms: 0,
            resolve_timeout_s: 0,
            resolved_retention_s: 3_600,
            silence_retention_s: 5 * 86_400,
            state_dir: DEFAULT_STATE_DIR.to_owned(),
            ha: HaConfig::default(),
            flapping: FlappingConfig::default(),
            route: RouteConfig::default(),
            receivers: Vec::new(),
            inhibit_rules: Vec::new(),
        }
    }
}

/// `[alerting.ha]`: alerting with standbys. The instances join one Kafka consumer group on a
/// one-partition coordination topic; the member holding the partition is active and the
/// others stand by. The active one keeps its state (alerts, groups, silences, pending
/// notifications, applied offsets) in a compacted Kafka topic instead of `state_dir`, which
/// the standbys read as it is written; silences go through a topic of their own, so one
/// created on any instance applies on all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    pub enabled: bool,
    /// Names this instance in logs (default: host name and process id).
    pub instance: Option<String>,
    pub group_id: String,
    pub leader_topic: String,
    pub state_topic: String,
    pub silences_topic: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            instance: None,
            group_id: "tripline-alerting-leader".into(),
            leader_topic: "tripline.alerting.leader".into(),
            state_topic: "tripline.alerting.state".into(),
            silences_topic: "tripline.alerting.silences".into(),
        }
    }
}

/// An alert that ends and fires again so often that `flips` firing/resolved flips fall within
/// `window_s` is held firing as "flapping" (one notification says so) until it has been quiet
/// for `window_s`. A dip bridged by `keep_firing_for_ms` is no flip.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    pub enabled: bool,
    pub flips: u32,
    pub window_s: u64,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flips: 4,
            window_s: 600,
        }
    }
}

/// One node of the routing tree. Unset fields are inherited from the parent route; the root's
/// fall back to the `DEFAULT_*` constants (and `for_ms` to `[alerting] for_ms`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A receiver's `name`; required on the root.
    #[serde(default)]
    pub receiver: Option<String>,
    /// Label matchers, all of which must match, e.g. `['severity=~"warning|critical"']`.
    /// The root route matches everything and takes none.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Keep looking at the following sibling routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Labels whose values split alerts into groups; `["..."]` for all labels.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default)]
    pub group_wait_ms: Option<u64>,
    /// How long a group waits after a notification before sending its changes.
    #[serde(default)]
    pub group_interval_ms: Option<u64>,
    /// How long before an unchanged, still-firing group is notified again.
    #[serde(default)]
    pub repeat_interval_s: Option<u64>,
    /// Overrides `[alerting] for_ms` for the alerts this route notifies.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// Child routes, tried in order (`[[alerting.route.routes]]`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    Webhook,
    Slack,
    Email,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Email => "email",
        }
    }
}

/// Where notifications go (`[[alerting.receivers]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// Webhook / Slack incoming-webhook URL...
    #[serde(default)]
    pub url: Option<String>,
    /// ...or the environment variable holding it (a Slack webhook URL is a secret).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Webhook only: environment variable holding the Standard Webhooks signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Email only: `smtps://host:465` (implicit TLS), `smtp://host:587?tls=required`
    /// (STARTTLS), or `smtp://host:25` (plain, local relays). A user may be given
    /// (`smtps://alerts@host`); the password comes from `smtp_password_env`.
    #[serde(default)]
    pub smtp_url: Option<String>,
    #[serde(default)]
    pub smtp_password_env: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Also notify when alerts resolve.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Most notifications per second to this receiver; Slack defaults to 1.
    #[serde(default)]
    pub rate_limit_per_s: Option<f64>,
}

fn default_true() -> bool {
    true
}

impl ReceiverConfig {
    /// The rate limit in force: the configured one, else 1/s for Slack, else none.
    pub fn effective_rate_limit_per_s(&self) -> Option<f64> {
        self.rate_limit_per_s
            .or((self.kind == ReceiverKind::Slack).then_some(1.0))
    }
}

/// Mutes `target` alerts while a firing `source` alert has the same values for `equal`, e.g.
/// a critical alert for a key mutes the warnings for that key.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    pub source_matchers: Vec<String>,
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

impl AlertingConfig {
    /// Alerting is on when at least one receiver is configured.
    pub fn enabled(&self) -> bool {
        !self.receivers.is_empty()
    }

    pub fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// Every value that makes no sense, with its place in `text` when it can be found.
    /// Keys name array elements by index: `alerting.route.routes[1].receiver`.
    pub fn problems(&self, text: &str) -> Vec<ConfigError> {
        self.problems_in(&Source::new(text))
    }

    pub(crate) fn problems_in(&self, source: &Source) -> Vec<ConfigError> {
        validate::problems(self)
            .into_iter()
            .map(|p| source.error(&format!("{}.{}", p.table, p.field), p.message, p.hint))
            .collect()
    }
}

#[cfg(test)]
mod tests;
