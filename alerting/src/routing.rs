//! The routing tree: which routes (and so receivers and grouping settings) an alert goes to.
//!
//! Alertmanager's semantics: an alert enters the root (which matches everything) and is tried
//! against the children in order, depth first. The first matching child takes it, unless that
//! child has `continue = true`, in which case the following siblings are tried too. A route
//! none of whose children match takes the alert itself. Unset settings are inherited from the
//! parent route.
//!
//! Each route has a stable `key` built from the matchers on its path (Alertmanager's form,
//! `{}/{severity="critical"}`), so that a config reload which keeps a route keeps its groups.

use std::collections::BTreeMap;

use tripline_core::config::{
    AlertingConfig, RouteConfig, DEFAULT_GROUP_BY, DEFAULT_GROUP_INTERVAL_MS,
    DEFAULT_GROUP_WAIT_MS, DEFAULT_REPEAT_INTERVAL_S, DEFAULT_SECURITY_GROUP_WAIT_MS, GROUP_BY_ALL,
    SECURITY_DETECTORS,
};

use crate::matcher::{all_match, list_to_string, Labels, Matcher, MatcherError};

/// Which labels split a route's alerts into groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `["..."]`: every label, so one group per alert.
    All,
    /// These labels (an empty list puts all the route's alerts in one group).
    Labels(Vec<String>),
    /// Set neither on the route nor above it: every label but `severity` for an alert of one of
    /// the `SECURITY_DETECTORS` (one group per alert, kept when it escalates),
    /// `DEFAULT_GROUP_BY` for the others.
    Default,
}

impl GroupBy {
    fn from_config(labels: &[String]) -> GroupBy {
        if labels.iter().any(|l| l == GROUP_BY_ALL) {
            GroupBy::All
        } else {
            GroupBy::Labels(labels.to_vec())
        }
    }
}

/// One route with everything inherited resolved. Durations in milliseconds.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable identity: the parent's key, `/`, and this route's matchers (`#n` appended for
    /// the n-th sibling with the same matchers).
    pub key: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub group_by: GroupBy,
    /// The route's `group_wait_ms` (inherited, or `DEFAULT_GROUP_WAIT_MS`); see
    /// [`Route::group_wait_for`].
    pub group_wait_ms: i64,
    /// The same, for groups of the `SECURITY_DETECTORS`: equal to `group_wait_ms` once the
    /// route or one above it sets it, `DEFAULT_SECURITY_GROUP_WAIT_MS` until then.
    pub security_group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    /// How long an alert fires before this route notifies it.
    pub for_ms: i64,
    /// The receiver's `send_resolved`.
    pub send_resolved: bool,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("route {route}: no receiver")]
    MissingReceiver { route: String },
    #[error("route {route}: {name:?} is not a receiver")]
    UnknownReceiver { route: String, name: String },
    #[error("route {route}: {source}")]
    Matcher {
        route: String,
        #[source]
        source: MatcherError,
    },
}

/// The routing tree built from `[alerting.route]`.
#[derive(Debug, Clone)]
pub struct RouteTree {
    pub root: Route,
}

impl RouteTree {
    /// Builds the tree; the config should have been validated (this repeats the checks that
    /// would make routing impossible).
    pub fn from_config(config: &AlertingConfig) -> Result<RouteTree, RoutingError> {
        let defaults = Inherited {
            receiver: None,
            group_by: GroupBy::Default,
            group_wait_ms: DEFAULT_GROUP_WAIT_MS,
            security_group_wait_ms: DEFAULT_SECURITY_GROUP_WAIT_MS,
            group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_S.saturating_mul(1000),
            for_ms: config.for_ms,
        };
        let root = build(config, &config.route, &defaults, "{}".to_owned())?;
        Ok(RouteTree { root })
    }

    /// The routes that take an alert with these labels, in depth-first order. Never empty: the
    /// root takes what no other route does.
    pub fn match_routes(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        match_into(&self.root, labels, &mut out);
        out
    }

    /// Every route, depth first (root first).
    pub fn routes(&self) -> Vec<&Route> {
        fn walk<'a>(route: &'a Route, out: &mut Vec<&'a Route>) {
            out.push(route);
            for child in &route.routes {
                walk(child, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    pub fn get(&self, key: &str) -> Option<&Route> {
        self.routes().into_iter().find(|r| r.key == key)
    }
}

impl Route {
    /// The values of the route's `group_by` labels for an alert (a missing label is left out,
    /// so it groups with the alerts that lack it too).
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        let pick = |names: &mut dyn Iterator<Item = &str>| -> Labels {
            names
                .filter_map(|n| labels.get(n).map(|v| (n.to_owned(), v.clone())))
                .collect()
        };
        match &self.group_by {
            GroupBy::All => labels.clone(),
            // The alert's own labels: `severity` changes when it escalates, its group must not.
            GroupBy::Default if is_security(labels) => labels
                .iter()
                .filter(|(k, _)| k.as_str() != "severity")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            GroupBy::Default => pick(&mut DEFAULT_GROUP_BY.iter().copied()),
            GroupBy::Labels(names) => pick(&mut names.iter().map(String::as_str)),
        }
    }

    /// How long a new group with these group labels waits before its first notification: the
    /// route's `group_wait_ms`, or when the tree sets none, `DEFAULT_SECURITY_GROUP_WAIT_MS`
    /// for a group of a security detector and `DEFAULT_GROUP_WAIT_MS` for the others.
    pub fn group_wait_for(&self, group_labels: &Labels) -> i64 {
        if is_security(group_labels) {
            self.security_group_wait_ms
        } else {
            self.group_wait_ms
        }
    }

    /// The group key for these group labels: `{route key}:{labels}`, Alertmanager's form,
    /// e.g. `{}/{severity="critical"}:{api_key_id="key-7", detector="leaked_key"}`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        format!("{}:{}", self.key, format_labels(group_labels))
    }
}

/// Whether these labels name one of the `SECURITY_DETECTORS`.
fn is_security(labels: &Labels) -> bool {
    labels
        .get("detector")
        .is_some_and(|d| SECURITY_DETECTORS.contains(&d.as_str()))
}

/// `{a="1", b="2"}` with values escaped like matcher values.
pub fn format_labels(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn match_into<'a>(route: &'a Route, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
    if !all_match(&route.matchers, labels) {
        return false;
    }
    let before = out.len();
    for child in &route.routes {
        if match_into(child, labels, out) && !child.continue_matching {
            break;
        }
    }
    if out.len() == before {
        out.push(route);
    }
    true
}

struct Inherited {
    receiver: Option<String>,
    group_by: GroupBy,
    group_wait_ms: u64,
    security_group_wait_ms: u64,
    group_interval_ms: u64,
    repeat_interval_ms: u64,
    for_ms: u64,
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn build(
    config: &AlertingConfig,
    rc: &RouteConfig,
    parent: &Inherited,
    key: String,
) -> Result<Route, RoutingError> {
    let here = Inherited {
        receiver: rc.receiver.clone().or_else(|| parent.receiver.clone()),
        group_by: rc
            .group_by
            .as_deref()
            .map_or_else(|| parent.group_by.clone(), GroupBy::from_config),
        group_wait_ms: rc.group_wait_ms.unwrap_or(parent.group_wait_ms),
        security_group_wait_ms: rc.group_wait_ms.unwrap_or(parent.security_group_wait_ms),
        group_interval_ms: rc.group_interval_ms.unwrap_or(parent.group_interval_ms),
        repeat_interval_ms: rc
            .repeat_interval_s
            .map_or(parent.repeat_interval_ms, |s| s.saturating_mul(1000)),
        for_ms: rc.for_ms.unwrap_or(parent.for_ms),
    };
    let Some(receiver) = here.receiver.clone() else {
        return Err(RoutingError::MissingReceiver { route: key });
    };
    let Some(receiver_config) = config.receiver(&receiver) else {
        return Err(RoutingError::UnknownReceiver {
            route: key,
            name: receiver,
        });
    };
    let matchers = rc
        .matchers
        .iter()
        .map(|m| Matcher::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RoutingError::Matcher {
            route: key.clone(),
            source,
        })?;

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut routes = Vec::with_capacity(rc.routes.len());
    for child in &rc.routes {
        let mut child_key = format!("{key}/{}", child_matchers_text(child));
        let n = seen.entry(child_key.clone()).or_insert(0);
        if *n > 0 {
            child_key = format!("{child_key}#{n}");
        }
        *n += 1;
        routes.push(build(config, child, &here, child_key)?);
    }
    Ok(Route {
        key,
        receiver,
        matchers,
        continue_matching: rc.continue_matching,
        group_by: here.group_by,
        group_wait_ms: ms(here.group_wait_ms),
        security_group_wait_ms: ms(here.security_group_wait_ms),
        group_interval_ms: ms(here.group_interval_ms).max(1),
        repeat_interval_ms: ms(here.repeat_interval_ms).max(1),
        for_ms: ms(here.for_ms),
        send_resolved: receiver_config.send_resolved,
        routes,
    })
}

/// The key part of a child route: its matchers in canonical form (the text as written when a
/// matcher does not parse; `build` reports that).
fn child_matchers_text(rc: &RouteConfig) -> String {
    // Sorted, so that reordering a route's matchers keeps its key (and its groups).
    match rc
        .matchers
        .iter()
        .map(|m| Matcher::parse(m))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(mut matchers) => {
            matchers.sort_by_key(Matcher::to_string);
            list_to_string(&matchers)
        }
        Err(_) => format!("{{{}}}", rc.matchers.join(", ")),
    }
}

#[cfg(test)]
mod tests;
