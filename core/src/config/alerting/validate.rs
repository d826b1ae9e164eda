//! The checks behind [`AlertingConfig::problems`]: each finds the table (with array indices)
//! and field it is about, and `problems` turns them into located `ConfigError`s.

use std::collections::BTreeSet;

use super::{
    is_label_name, AlertingConfig, MatcherSpec, ReceiverConfig, ReceiverKind, RouteConfig,
    GROUP_BY_ALL,
};

pub(super) fn problems(config: &AlertingConfig) -> Vec<Problem> {
    let mut found = Problems::default();
    config.check(&mut found);
    found.0
}

impl AlertingConfig {
    pub(super) fn check(&self, out: &mut Problems) {
        let t = "alerting";
        if let Some(url) = &self.external_url {
            out.check(
                is_http_url(url),
                t,
                "external_url",
                format!("{url:?} is not an http(s) URL"),
                "the address people open Tripline at, e.g. \"https://tripline.example.com\"",
            );
        }
        let f = &self.flapping;
        if f.enabled {
            out.check(
                f.flips >= 2,
                "alerting.flapping",
                "flips",
                format!("must be at least 2 (got {})", f.flips),
                "how many firing/resolved flips within window_s make an alert flapping; or set enabled = false",
            );
            out.check(
                f.window_s > 0,
                "alerting.flapping",
                "window_s",
                "must be positive".into(),
                "seconds; or set enabled = false",
            );
        }

        let ha = &self.ha;
        if ha.enabled {
            let topics = [
                ("group_id", &ha.group_id),
                ("leader_topic", &ha.leader_topic),
                ("state_topic", &ha.state_topic),
                ("silences_topic", &ha.silences_topic),
            ];
            for (field, value) in topics {
                out.check(
                    !value.trim().is_empty(),
                    "alerting.ha",
                    field,
                    "is empty".into(),
                    "every alerting instance of one deployment uses the same names",
                );
            }
            out.check(
                ha.state_topic != ha.silences_topic
                    && ha.leader_topic != ha.state_topic
                    && ha.leader_topic != ha.silences_topic,
                "alerting.ha",
                "state_topic",
                "the leader, state and silences topics must differ".into(),
                "e.g. tripline.alerting.leader, tripline.alerting.state, tripline.alerting.silences",
            );
        }

        let mut names = BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let table = format!("alerting.receivers[{i}]");
            check_receiver(r, &table, out);
            out.check(
                names.insert(r.name.as_str()),
                &table,
                "name",
                format!("{:?} is defined twice", r.name),
                "receiver names must be unique: rename one",
            );
        }

        let root = &self.route;
        let t = "alerting.route";
        out.check(
            root.matchers.is_empty(),
            t,
            "matchers",
            "the root route matches every alert and takes no matchers".into(),
            "put matchers on [[alerting.route.routes]]",
        );
        out.check(
            !root.continue_matching,
            t,
            "continue",
            "the root route cannot continue".into(),
            "remove continue from [alerting.route]; it belongs on [[alerting.route.routes]]",
        );
        if root.receiver.is_none() && (self.enabled() || !root.routes.is_empty()) {
            out.push(
                t,
                "receiver",
                "the root route needs a receiver (alerts no other route takes go there)".into(),
                "the name of one of [[alerting.receivers]]",
            );
        }
        self.check_route(root, t, out);

        for (i, rule) in self.inhibit_rules.iter().enumerate() {
            let table = format!("alerting.inhibit_rules[{i}]");
            for (field, list) in [
                ("source_matchers", &rule.source_matchers),
                ("target_matchers", &rule.target_matchers),
            ] {
                out.check(
                    !list.is_empty(),
                    &table,
                    field,
                    "is empty: the rule would apply to every alert".into(),
                    "e.g. ['severity=\"critical\"']",
                );
                check_matchers(list, &table, field, out);
            }
            for label in &rule.equal {
                out.check(
                    is_label_name(label),
                    &table,
                    "equal",
                    format!("{label:?} is not a label name"),
                    "label names are letters, digits and '_', not starting with a digit",
                );
            }
        }
    }

    fn check_route(&self, route: &RouteConfig, table: &str, out: &mut Problems) {
        if let Some(name) = &route.receiver {
            out.check(
                self.receiver(name).is_some(),
                table,
                "receiver",
                format!("{name:?} is not a receiver"),
                "the name of one of [[alerting.receivers]]",
            );
        }
        check_matchers(&route.matchers, table, "matchers", out);
        if let Some(group_by) = &route.group_by {
            let all = group_by.iter().any(|l| l == GROUP_BY_ALL);
            out.check(
                !all || group_by.len() == 1,
                table,
                "group_by",
                "\"...\" (all labels) cannot be combined with other labels".into(),
                "use [\"...\"] alone, or list the labels",
            );
            for label in group_by.iter().filter(|l| *l != GROUP_BY_ALL) {
                out.check(
                    is_label_name(label),
                    table,
                    "group_by",
                    format!("{label:?} is not a label name"),
                    "label names are letters, digits and '_', not starting with a digit",
                );
            }
            let unique: BTreeSet<&String> = group_by.iter().collect();
            out.check(
                unique.len() == group_by.len(),
                table,
                "group_by",
                "lists a label twice".into(),
                "remove the repeated label",
            );
        }
        out.check(
            route.group_interval_ms != Some(0),
            table,
            "group_interval_ms",
            "must be positive".into(),
            "milliseconds a group waits between notifications of its changes; leave it out to inherit",
        );
        out.check(
            route.repeat_interval_s != Some(0),
            table,
            "repeat_interval_s",
            "must be positive".into(),
            "seconds before a still-firing group is notified again; leave it out to inherit",
        );
        for (i, child) in route.routes.iter().enumerate() {
            self.check_route(child, &format!("{table}.routes[{i}]"), out);
        }
    }
}

fn check_receiver(r: &ReceiverConfig, table: &str, out: &mut Problems) {
    let valid_name = !r.name.is_empty()
        && r.name.len() <= 64
        && r.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    out.check(
        valid_name,
        table,
        "name",
        format!("{:?} is not a valid receiver name", r.name),
        "letters, digits, '_', '-' and '.', at most 64 characters",
    );
    let kind = r.kind.as_str();
    let only = |field: &str, set: bool, for_kind: &'static str, out: &mut Problems| {
        out.check(
            !set,
            table,
            field,
            format!("is not used by {kind} receivers"),
            for_kind,
        );
    };
    match r.kind {
        ReceiverKind::Webhook | ReceiverKind::Slack => {
            match (&r.url, &r.url_env) {
                (Some(url), None) => out.check(
                    is_http_url(url),
                    table,
                    "url",
                    format!("{url:?} is not an http(s) URL"),
                    "e.g. \"https://hooks.example.com/tripline\"",
                ),
                (None, Some(var)) => out.check(
                    !var.trim().is_empty(),
                    table,
                    "url_env",
                    "names no environment variable".into(),
                    "the environment variable holding the URL, e.g. \"TRIPLINE_SLACK_WEBHOOK_URL\"",
                ),
                (None, None) => out.push(
                    table,
                    "url",
                    format!("a {kind} receiver needs url or url_env"),
                    "add url = \"https://...\" or url_env = \"VAR\" (a Slack webhook URL is a secret: use url_env)",
                ),
                (Some(_), Some(_)) => {
                    out.push(table, "url", "set url or url_env, not both".into(), "remove one of url and url_env")
                }
            }
            if r.kind == ReceiverKind::Slack {
                only(
                    "secret_env",
                    r.secret_env.is_some(),
                    "remove it: only webhook receivers sign",
                    out,
                );
            } else if let Some(var) = &r.secret_env {
                out.check(
                    !var.trim().is_empty(),
                    table,
                    "secret_env",
                    "names no environment variable".into(),
                    "the environment variable holding the signing secret, e.g. \"TRIPLINE_WEBHOOK_SECRET\"",
                );
            }
            only(
                "smtp_url",
                r.smtp_url.is_some(),
                "remove it: only email receivers use it",
                out,
            );
            only(
                "smtp_password_env",
                r.smtp_password_env.is_some(),
                "remove it: only email receivers use it",
                out,
            );
            only(
                "from",
                r.from.is_some(),
                "remove it: only email receivers use it",
                out,
            );
            only(
                "to",
                !r.to.is_empty(),
                "remove it: only email receivers use it",
                out,
            );
        }
        ReceiverKind::Email => {
            match &r.smtp_url {
                None => out.push(
                    table,
                    "smtp_url",
                    "an email receiver needs smtp_url".into(),
                    "e.g. \"smtps://smtp.example.com:465\"",
                ),
                Some(url) => {
                    let scheme_ok = url.starts_with("smtp://") || url.starts_with("smtps://");
                    out.check(
                        scheme_ok,
                        table,
                        "smtp_url",
                        format!("{url:?} is not an smtp:// or smtps:// URL"),
                        "e.g. \"smtps://smtp.example.com:465\" or \"smtp://relay.internal:25\"",
                    );
                    let authority = url
                        .split_once("://")
                        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
                    let has_password = authority
                        .rsplit_once('@')
                        .is_some_and(|(user, _)| user.contains(':'));
                    out.check(!has_password, table, "smtp_url", "contains a password".into(), "keep the user in the URL and put the password in the variable named by smtp_password_env");
                }
            }
            match &r.from {
                Some(from) => out.check(
                    from.contains('@'),
                    table,
                    "from",
                    format!("{from:?} is not an email address"),
                    "e.g. \"tripline@example.com\"",
                ),
                None => out.push(
                    table,
                    "from",
                    "an email receiver needs from".into(),
                    "add from = \"tripline@example.com\"",
                ),
            }
            out.check(
                !r.to.is_empty(),
                table,
                "to",
                "an email receiver needs at least one address".into(),
                "add to = [\"oncall@example.com\"]",
            );
            for to in &r.to {
                out.check(
                    to.contains('@'),
                    table,
                    "to",
                    format!("{to:?} is not an email address"),
                    "e.g. \"oncall@example.com\"",
                );
            }
            only(
                "url",
                r.url.is_some(),
                "remove it: only webhook and slack receivers use it",
                out,
            );
            only(
                "url_env",
                r.url_env.is_some(),
                "remove it: only webhook and slack receivers use it",
                out,
            );
            only(
                "secret_env",
                r.secret_env.is_some(),
                "remove it: only webhook receivers use it",
                out,
            );
        }
    }
    if let Some(rate) = r.rate_limit_per_s {
        out.check(
            rate.is_finite() && rate > 0.0,
            table,
            "rate_limit_per_s",
            format!("must be positive (got {rate})"),
            "notifications per second, e.g. 1.0; leave it out for no limit (Slack: 1)",
        );
    }
}

fn check_matchers(list: &[String], table: &str, field: &str, out: &mut Problems) {
    for text in list {
        if let Err(err) = MatcherSpec::parse(text) {
            out.push(
                table,
                field,
                err.to_string(),
                "name=\"value\", name!=\"value\", name=~\"regex\" or name!~\"regex\"",
            );
        }
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

pub(super) struct Problem {
    pub table: String,
    pub field: String,
    pub message: String,
    pub hint: &'static str,
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, table: &str, field: &str, message: String, hint: &'static str) {
        self.0.push(Problem {
            table: table.to_owned(),
            field: field.to_owned(),
            message,
            hint,
        });
    }

    fn check(&mut self, ok: bool, table: &str, field: &str, message: String, hint: &'static str) {
        if !ok {
            self.push(table, field, message, hint);
        }
    }
}
