//! Slack incoming webhooks: a Block Kit message per notification.
//!
//! Layout: a header (status, detector, severity), a context line (group, reason), then per
//! alert a section (summary, description, up to 10 fields of key facts), an evidence section
//! (top IPs, countries, networks, models, user agents, facts) and a context line (fingerprint,
//! start, end), and a closing context with "+N more alerts" and a link to Tripline.
//!
//! Slack's limits are respected, with "+N more" where something is cut: 50 blocks, 3000
//! characters per section text, 10 fields per section (2000 characters each), 150 characters of
//! header, 10 context elements.
//!
//! Everything that comes from traffic (labels, model names, user agents, IPs, summaries) is
//! user-controlled and escaped: `&`, `<`, `>` become entities (so `<!channel>`, `<@U123>`,
//! `<http://x|y>` stay text), `@` is followed by a word joiner (U+2060, invisible) so `@here`
//! never becomes a mention, and mrkdwn markers are replaced with lookalikes outside code spans
//! (`*` → `∗`, `_` → `ˍ` unless between two letters or digits, `~` → `∼`, `` ` `` → `ˋ`). Values are shown in code spans, where
//! formatting does not apply and only the backtick needs replacing. Every mrkdwn text object
//! is `verbatim: true`, so Slack does not auto-link channel names, URLs or mentions in it.
//! The header is `plain_text`, which Slack never parses.

use std::fmt::Write as _;

use serde_json::{json, Value};
use tripline_core::alert::{Alert, AlertStatus, Counted, Severity};
use tripline_core::time::format_ms;

use super::http::HttpRequest;
use super::{display_labels, number, one_line, truncate_chars, window_text, Message};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Values in lists (IPs, user agents) are cut at this many characters.
const MAX_VALUE_CHARS: usize = 120;
/// Values shown per evidence list before "+N more".
const EVIDENCE_TOP: usize = 5;

/// A Slack incoming webhook. The URL is a credential: it comes from the environment, and
/// `Debug` does not show it.
#[derive(Clone)]
pub struct SlackReceiver {
    pub url: String,
}

impl std::fmt::Debug for SlackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackReceiver { url: <redacted> }")
    }
}

impl SlackReceiver {
    /// The POST for `msg`. Pace it with [`super::delivery::RateLimiter::slack`] (Slack allows
    /// about one message per second per webhook).
    pub fn request(&self, msg: &Message) -> HttpRequest {
        HttpRequest {
            url: self.url.clone(),
            headers: vec![(
                "content-type".to_owned(),
                "application/json; charset=utf-8".to_owned(),
            )],
            body: serde_json::to_vec(&message(msg)).expect("json values serialize"),
        }
    }
}

/// Escapes user-controlled text for mrkdwn outside code spans (see the module docs). Newlines
/// are kept; other control characters become spaces.
pub fn escape_mrkdwn(s: &str) -> String {
    escape_within(s, usize::MAX, false).0
}

/// Escapes user-controlled text and cuts it (with `…`) so the result has at most `max` chars,
/// never inside an entity. Returns whether it was cut.
fn escape_within(s: &str, max: usize, code: bool) -> (String, bool) {
    let mut out = String::new();
    let mut len = 0usize;
    let mut piece = String::new();
    let mut chars = s.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        piece.clear();
        // `snake_case` never formats (a marker needs a non-word character on its outer side),
        // so an underscore between two letters or digits stays itself.
        let intraword = prev.is_some_and(char::is_alphanumeric)
            && chars.peek().is_some_and(|n| n.is_alphanumeric());
        prev = Some(c);
        match c {
            '&' => piece.push_str("&amp;"),
            '<' => piece.push_str("&lt;"),
            '>' => piece.push_str("&gt;"),
            '@' => piece.push_str("@\u{2060}"),
            '`' => piece.push('ˋ'),
            '*' if !code => piece.push('∗'),
            '_' if !code && !intraword => piece.push('ˍ'),
            '~' if !code => piece.push('∼'),
            '\n' if !code => piece.push('\n'),
            c if c.is_control() => piece.push(' '),
            c => piece.push(c),
        }
        let n = piece.chars().count();
        // Keep room for the ellipsis unless this is the last character.
        let reserve = usize::from(chars.peek().is_some());
        if len + n + reserve > max {
            if len < max {
                out.push('…');
            }
            return (out, true);
        }
        out.push_str(&piece);
        len += n;
    }
    (out, false)
}

/// A user-controlled value as an inline code span, cut at `max` characters.
pub fn code(s: &str) -> String {
    code_within(s, MAX_VALUE_CHARS)
}

fn code_within(s: &str, max: usize) -> String {
    if s.is_empty() {
        return "_(empty)_".to_owned();
    }
    format!("`{}`", escape_within(s, max, true).0)
}

/// `<url|text>` for an http(s) URL (escaped as Slack requires), else the text alone.
fn link(url: &str, text: &str) -> String {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return escape_mrkdwn(text);
    }
    let mut u = String::new();
    for c in url.chars() {
        match c {
            '&' => u.push_str("&amp;"),
            '<' => u.push_str("%3C"),
            '>' => u.push_str("%3E"),
            '|' => u.push_str("%7C"),
            ' ' => u.push_str("%20"),
            c if c.is_control() => {}
            c => u.push(c),
        }
    }
    format!("<{u}|{}>", escape_mrkdwn(text))
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// `lines` joined by newlines, as many as fit in `max` chars, then `+N more` for the rest.
/// The lines are escaped mrkdwn; a line is never cut except when the first alone is too long.
fn fit_lines(lines: &[String], max: usize) -> String {
    let marker = |n: usize| format!("_+{n} more_");
    let mut out = String::new();
    let mut len = 0;
    for (i, line) in lines.iter().enumerate() {
        let after = lines.len() - i - 1;
        // Room is kept for the marker that would follow this line if the next does not fit.
        let reserve = if after > 0 {
            marker(after).chars().count() + 1
        } else {
            0
        };
        let add = usize::from(i > 0) + line.chars().count();
        if len + add + reserve <= max {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(line);
            len += add;
            continue;
        }
        if i > 0 {
            out.push('\n');
            out.push_str(&marker(lines.len() - i));
        } else {
            out.push_str(&safe_cut(line, max.saturating_sub(reserve)));
            if after > 0 {
                out.push('\n');
                out.push_str(&marker(after));
            }
        }
        return out;
    }
    out
}

/// Cuts escaped mrkdwn to at most `max` chars ending in `…`, without leaving half an entity
/// (`&am`) or an unclosed code span.
fn safe_cut(s: &str, max: usize) -> String {
    let (cut, was_cut) = truncate_chars(s, max.saturating_sub(1));
    if !was_cut {
        return s.to_owned();
    }
    let mut cut = cut;
    if let Some(amp) = cut.rfind('&') {
        if !cut[amp..].contains(';') {
            cut = &cut[..amp];
        }
    }
    if cut.matches('`').count() % 2 == 1 {
        cut = &cut[..cut.rfind('`').unwrap_or(0)];
    }
    format!("{cut}…")
}

fn status_word(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    }
}

fn severity_emoji(status: AlertStatus, severity: Severity) -> &'static str {
    match (status, severity) {
        (AlertStatus::Resolved, _) => "✅",
        (_, Severity::Critical) => "🔴",
        (_, Severity::Warning) => "🟠",
        (_, Severity::Info) => "🔵",
    }
}

/// The header: `🔴 [FIRING:2] spend_spike · critical`, plain text, at most 150 chars.
pub fn header_text(msg: &Message) -> String {
    let severity = msg.max_severity().unwrap_or(Severity::Info);
    let mut text = format!(
        "{} [{}:{}] {}",
        severity_emoji(msg.status, severity),
        status_word(msg.status),
        msg.status_count(),
        one_line(&msg.detector_text()),
    );
    if msg.status == AlertStatus::Firing {
        text.push_str(" · ");
        text.push_str(severity.as_str());
    }
    let (cut, was_cut) = truncate_chars(&text, MAX_HEADER_TEXT - 1);
    if was_cut {
        format!("{cut}…")
    } else {
        text
    }
}

/// The notification text (`text`, shown in push notifications), escaped, one line.
fn fallback_text(msg: &Message) -> String {
    let mut t = format!(
        "[{}:{}] {}",
        status_word(msg.status),
        msg.status_count(),
        msg.detector_text()
    );
    for (k, v) in display_labels(&msg.common_labels).into_iter().take(3) {
        let _ = write!(t, " {k}={v}");
    }
    let (cut, _) = truncate_chars(&t, 300);
    escape_mrkdwn(&one_line(cut))
}

fn fields(alert: &Alert) -> Vec<Value> {
    let mut f: Vec<String> = Vec::new();
    let labels = display_labels(&alert.labels);
    let facts = [
        format!(
            "*Observed*\n{} (expected {}, limit {})",
            number(alert.observed),
            number(alert.expected),
            number(alert.upper)
        ),
        format!(
            "*Window*\n{}",
            escape_mrkdwn(&window_text(alert.window_start, alert.window_end))
        ),
        format!(
            "*Severity · score*\n{} · {}",
            alert.severity.as_str(),
            number(alert.score)
        ),
    ];
    // Labels first (key id, project, …), leaving room for the three facts.
    let label_room = MAX_FIELDS - facts.len();
    let shown = if labels.len() > label_room {
        label_room - 1
    } else {
        labels.len()
    };
    for (k, v) in &labels[..shown] {
        let title = match *k {
            "api_key_id" => "Key".to_owned(),
            "project" => "Project".to_owned(),
            "provider" => "Provider".to_owned(),
            "model" => "Model".to_owned(),
            "user" => "User".to_owned(),
            "client_ip" => "Client IP".to_owned(),
            other => escape_within(&one_line(other), 100, false).0,
        };
        f.push(format!("*{title}*\n{}", code(v)));
    }
    if labels.len() > shown {
        let rest: Vec<String> = labels[shown..]
            .iter()
            .map(|(k, v)| code(&format!("{k}={v}")))
            .collect();
        f.push(format!(
            "*+{} more labels*\n{}",
            rest.len(),
            fit_lines(&rest, MAX_FIELD_TEXT - 40).replace('\n', " ")
        ));
    }
    f.extend(facts);
    f.into_iter()
        .take(MAX_FIELDS)
        // Fields are built from length-capped pieces; the cut is a last resort.
        .map(|t| mrkdwn(safe_cut(&t, MAX_FIELD_TEXT)))
        .collect()
}

fn counted_line(title: &str, values: &[Counted]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let mut line = format!("*{title}*: ");
    let shown: Vec<String> = values
        .iter()
        .take(EVIDENCE_TOP)
        .map(|c| format!("{} ×{}", code(&c.value), c.count))
        .collect();
    line.push_str(&shown.join(", "));
    if values.len() > EVIDENCE_TOP {
        let _ = write!(line, " _+{} more_", values.len() - EVIDENCE_TOP);
    }
    Some(line)
}

fn evidence_text(alert: &Alert) -> Option<String> {
    let e = &alert.evidence;
    let mut lines: Vec<String> = [
        counted_line("Top IPs", &e.top_ips),
        counted_line("Countries", &e.countries),
        counted_line("Networks", &e.asns),
        counted_line("Models", &e.models),
        counted_line("User agents", &e.user_agents),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !e.facts.is_empty() {
        let facts: Vec<String> = e
            .facts
            .iter()
            .take(EVIDENCE_TOP)
            .map(|(k, v)| code(&format!("{k}={v}")))
            .collect();
        let mut line = format!("*Facts*: {}", facts.join(", "));
        if e.facts.len() > EVIDENCE_TOP {
            let _ = write!(line, " _+{} more_", e.facts.len() - EVIDENCE_TOP);
        }
        lines.push(line);
    }
    if !e.request_ids.is_empty() {
        let ids: Vec<String> = e.request_ids.iter().take(3).map(|r| code(r)).collect();
        let mut line = format!("*Requests*: {}", ids.join(", "));
        if e.request_ids.len() > 3 {
            let _ = write!(line, " _+{} more_", e.request_ids.len() - 3);
        }
        lines.push(line);
    }
    (!lines.is_empty()).then(|| fit_lines(&lines, MAX_SECTION_TEXT))
}

/// The blocks of one alert (2 or 3).
fn alert_blocks(alert: &Alert) -> Vec<Value> {
    let (summary, _) = escape_within(&one_line(&alert.summary), 600, false);
    let title = format!(
        "{} *{}*",
        severity_emoji(alert.status, alert.severity),
        summary
    );
    let room = MAX_SECTION_TEXT - title.chars().count() - 1;
    let (description, _) = escape_within(&alert.description, room, false);
    let text = if description.is_empty() {
        title
    } else {
        format!("{title}\n{description}")
    };
    let mut blocks =
        vec![json!({"type": "section", "text": mrkdwn(text), "fields": fields(alert)})];
    if let Some(evidence) = evidence_text(alert) {
        blocks.push(json!({"type": "section", "text": mrkdwn(evidence)}));
    }
    let mut context = vec![
        format!(
            "{} · {}",
            status_word(alert.status).to_lowercase(),
            code(&alert.detector)
        ),
        format!("fingerprint {}", code(&alert.fingerprint)),
        format!("started {}", format_ms(alert.starts_at)),
    ];
    if let Some(ends_at) = alert.ends_at {
        context.push(format!("ended {}", format_ms(ends_at)));
    }
    blocks.push(json!({
        "type": "context",
        "elements": context.into_iter().take(MAX_CONTEXT_ELEMENTS).map(mrkdwn).collect::<Vec<_>>(),
    }));
    blocks
}

/// The whole message: `{"text", "blocks", "unfurl_links": false, "unfurl_media": false}`.
pub fn message(msg: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header_text(msg), "emoji": true},
    })];
    let group: Vec<String> = msg
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let group = if group.is_empty() {
        "all".to_owned()
    } else {
        group.join(", ")
    };
    blocks.push(json!({
        "type": "context",
        "elements": [
            mrkdwn(format!("group {}", code_within(&group, 300))),
            mrkdwn(format!("reason {}", code(&msg.reason))),
            mrkdwn(format!("receiver {}", code(&msg.receiver))),
        ],
    }));
    // Firing alerts first; the closing context always fits.
    let mut alerts: Vec<&Alert> = msg.alerts.iter().collect();
    alerts.sort_by_key(|a| a.status != AlertStatus::Firing);
    let mut shown = 0;
    for alert in &alerts {
        let b = alert_blocks(alert);
        if blocks.len() + b.len() + 1 > MAX_BLOCKS {
            break;
        }
        blocks.extend(b);
        shown += 1;
    }
    let mut closing = Vec::new();
    if shown < alerts.len() {
        closing.push(mrkdwn(format!(
            "*+{} more alerts* not shown",
            alerts.len() - shown
        )));
    }
    if let Some(url) = &msg.external_url {
        closing.push(mrkdwn(link(url, "Open Tripline")));
    }
    if !closing.is_empty() {
        blocks.push(json!({"type": "context", "elements": closing}));
    }
    json!({
        "text": fallback_text(msg),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

#[cfg(test)]
#[path = "slack_tests.rs"]
mod tests;
