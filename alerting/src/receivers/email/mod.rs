//! Email over SMTP with lettre: a multipart/alternative (text + HTML) message per notification,
//! threaded per alert group.
//!
//! - Subject: `[FIRING:2] spend_spike key-7 (search)`: the status and how many alerts are in
//!   it, the group's label values, then the other common label values in parentheses.
//! - `Message-ID: <msg_…@from-domain>` from [`super::notification_id`]: the same for every
//!   retry of one notification, so a mailbox that already has it can drop the duplicate.
//! - `In-Reply-To` and `References: <group-…@from-domain>` from [`super::group_thread_id`]: every
//!   notification of a group refers to the same (never sent) root, so mail clients show a
//!   group's firing, repeat and resolved mails as one conversation.
//! - `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders stay quiet.
//! - All user-controlled text is HTML-escaped in the HTML part; control characters are removed
//!   from the subject and one-line fields.
//!
//! Transport, chosen by the URL: `smtps://host[:465]` implicit TLS; `smtp://host[:587]?tls=required`
//! STARTTLS, refusing to continue without it; `smtp://host[:25]` plain, for local relays
//! (`?tls=opportunistic` upgrades when offered). Credentials never come from the URL (it is
//! logged): `username_env` / `password_env` name environment variables, and they are refused
//! over a plain connection to anything but a loopback host.
//!
//! Runtime: lettre's `pool` feature is off, so each send opens and closes its own connection
//! and an [`EmailReceiver`] owns no background task. A pooled `AsyncSmtpTransport` dropped
//! outside a tokio runtime aborts the process; if pooling is ever enabled, keep every receiver
//! (and its transport) inside the runtime and drop it before the runtime shuts down.

use std::fmt::Write as _;
use std::time::SystemTime;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use tripline_core::alert::{Alert, AlertStatus, Counted};
use tripline_core::time::format_ms;

use super::{
    display_labels, group_thread_id, notification_id, number, one_line, truncate_chars,
    window_text, Message,
};

mod smtp;
pub use smtp::{EmailReceiver, EmailSettings, SmtpSecurity, SmtpTarget};

/// Alerts written out in one mail; the rest are counted.
const MAX_ALERTS: usize = 100;
const MAX_SUBJECT_CHARS: usize = 200;
const EVIDENCE_TOP: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("invalid smtp url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid email address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("environment variable {0} (named in the email receiver's config) is not set")]
    MissingEnv(String),
    #[error("{0}")]
    Config(String),
    #[error("building the email: {0}")]
    Build(String),
}

/// An email receiver's settings (the `[[alerting.receivers]]` email table).
fn mailbox(address: &str) -> Result<Mailbox, EmailError> {
    address
        .trim()
        .parse()
        .map_err(|e: lettre::address::AddressError| EmailError::Address {
            address: address.to_owned(),
            reason: e.to_string(),
        })
}

/// RFC 3834 `Auto-Submitted: auto-generated`.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `[FIRING:2] spend_spike key-7 (search)`.
pub fn subject(msg: &Message) -> String {
    let status = match msg.status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    };
    let mut s = format!("[{status}:{}]", msg.status_count());
    let group: Vec<&str> = match msg.group_labels.get("detector") {
        Some(d) => std::iter::once(d.as_str())
            .chain(
                display_labels(&msg.group_labels)
                    .into_iter()
                    .map(|(_, v)| v),
            )
            .collect(),
        None => display_labels(&msg.group_labels)
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    };
    if group.is_empty() {
        let _ = write!(s, " {}", msg.detector_text());
    } else {
        for v in &group {
            let _ = write!(s, " {v}");
        }
    }
    let extra: Vec<&str> = display_labels(&msg.common_labels)
        .into_iter()
        .filter(|(k, _)| !msg.group_labels.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    if !extra.is_empty() {
        let _ = write!(s, " ({})", extra.join(" "));
    }
    let s = one_line(&s);
    match truncate_chars(&s, MAX_SUBJECT_CHARS - 1) {
        (cut, true) => format!("{cut}…"),
        (_, false) => s,
    }
}

/// `<msg_…@domain>`: the notification's Message-ID.
pub fn message_id(msg: &Message, sequence: u64, domain: &str) -> String {
    format!("<{}@{domain}>", notification_id(msg, sequence))
}

/// `<group-…@domain>`: the thread root every notification of the group refers to.
pub fn thread_id(msg: &Message, domain: &str) -> String {
    format!(
        "<group-{}@{domain}>",
        group_thread_id(&msg.receiver, &msg.group_key)
    )
}

fn ordered(msg: &Message) -> Vec<&Alert> {
    let mut alerts: Vec<&Alert> = msg.alerts.iter().collect();
    alerts.sort_by_key(|a| a.status != AlertStatus::Firing);
    alerts
}

fn counted_text(values: &[Counted]) -> String {
    let mut s: Vec<String> = values
        .iter()
        .take(EVIDENCE_TOP)
        .map(|c| format!("{} ×{}", one_line(&c.value), c.count))
        .collect();
    if values.len() > EVIDENCE_TOP {
        s.push(format!("+{} more", values.len() - EVIDENCE_TOP));
    }
    s.join(", ")
}

/// The facts of one alert as (title, value) rows, shared by the text and HTML parts.
fn rows(a: &Alert) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = display_labels(&a.labels)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), one_line(v)))
        .collect();
    rows.push((
        "observed".into(),
        format!(
            "{} (expected {}, limit {})",
            number(a.observed),
            number(a.expected),
            number(a.upper)
        ),
    ));
    rows.push(("window".into(), window_text(a.window_start, a.window_end)));
    rows.push(("score".into(), number(a.score)));
    rows.push(("started".into(), format_ms(a.starts_at)));
    if let Some(ends_at) = a.ends_at {
        rows.push(("ended".into(), format_ms(ends_at)));
    }
    rows.push(("fingerprint".into(), a.fingerprint.clone()));
    let e = &a.evidence;
    for (title, values) in [
        ("top IPs", &e.top_ips),
        ("countries", &e.countries),
        ("networks", &e.asns),
        ("models", &e.models),
        ("user agents", &e.user_agents),
    ] {
        if !values.is_empty() {
            rows.push((title.into(), counted_text(values)));
        }
    }
    if !e.facts.is_empty() {
        let facts: Vec<String> = e.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("facts".into(), one_line(&facts.join(", "))));
    }
    if !e.request_ids.is_empty() {
        rows.push(("requests".into(), one_line(&e.request_ids.join(", "))));
    }
    rows
}

fn group_text(msg: &Message) -> String {
    let labels: Vec<String> = msg
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    one_line(&labels.join(", "))
}

/// The text/plain part.
pub fn text_body(msg: &Message) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}", subject(msg));
    let _ = writeln!(
        t,
        "group: {} · reason: {} · receiver: {}",
        group_text(msg),
        one_line(&msg.reason),
        one_line(&msg.receiver)
    );
    let alerts = ordered(msg);
    for (i, a) in alerts.iter().take(MAX_ALERTS).enumerate() {
        let _ = writeln!(
            t,
            "\n{}. {} · {} · {}\n{}",
            i + 1,
            a.status.as_str().to_uppercase(),
            a.severity.as_str(),
            one_line(&a.summary),
            a.description
        );
        let rows = rows(a);
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(t, "  {k:width$}  {v}");
        }
    }
    if alerts.len() > MAX_ALERTS {
        let _ = writeln!(t, "\n+{} more alerts", alerts.len() - MAX_ALERTS);
    }
    if let Some(url) = &msg.external_url {
        let _ = writeln!(t, "\nOpen Tripline: {}", one_line(url));
    }
    t
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The text/html part.
pub fn html_body(msg: &Message) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family:sans-serif;font-size:14px;color:#222\">\n",
    );
    let _ = writeln!(
        h,
        "<h2 style=\"margin:0 0 4px\">{}</h2>",
        html_escape(&subject(msg))
    );
    let _ = writeln!(
        h,
        "<p style=\"color:#666;margin:0 0 12px\">group {} · reason {} · receiver {}</p>",
        html_escape(&group_text(msg)),
        html_escape(&msg.reason),
        html_escape(&msg.receiver)
    );
    let alerts = ordered(msg);
    for a in alerts.iter().take(MAX_ALERTS) {
        let color = match (a.status, a.severity) {
            (AlertStatus::Resolved, _) => "#2e7d32",
            (_, tripline_core::alert::Severity::Critical) => "#c62828",
            (_, tripline_core::alert::Severity::Warning) => "#ef6c00",
            (_, tripline_core::alert::Severity::Info) => "#1565c0",
        };
        let _ = writeln!(
            h,
            "<h3 style=\"margin:16px 0 4px;border-left:4px solid {color};padding-left:8px\">\
             {} · {} · {}</h3>",
            a.status.as_str().to_uppercase(),
            a.severity.as_str(),
            html_escape(&a.summary)
        );
        let description = html_escape(&a.description).replace('\n', "<br>");
        let _ = writeln!(h, "<p style=\"margin:0 0 8px\">{description}</p>");
        h.push_str("<table style=\"border-collapse:collapse\">\n");
        for (k, v) in rows(a) {
            let _ = writeln!(
                h,
                "<tr><td style=\"color:#666;padding:2px 12px 2px 0;vertical-align:top\">{}</td>\
                 <td style=\"font-family:monospace;padding:2px 0\">{}</td></tr>",
                html_escape(&k),
                html_escape(&v)
            );
        }
        h.push_str("</table>\n");
    }
    if alerts.len() > MAX_ALERTS {
        let _ = writeln!(h, "<p>+{} more alerts</p>", alerts.len() - MAX_ALERTS);
    }
    if let Some(url) = msg
        .external_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        let _ = writeln!(
            h,
            "<p><a href=\"{}\">Open Tripline</a></p>",
            html_escape(url)
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// The email for one notification. `sequence` as for [`super::notification_id`]; `now`
/// becomes the `Date` header.
pub fn build(
    msg: &Message,
    sequence: u64,
    from: &Mailbox,
    to: &[Mailbox],
    now: SystemTime,
) -> Result<lettre::Message, EmailError> {
    let domain = from.email.domain();
    let thread = thread_id(msg, domain);
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(subject(msg))
        .date(now)
        .message_id(Some(message_id(msg, sequence, domain)))
        .in_reply_to(thread.clone())
        .references(thread)
        .header(AutoSubmitted)
        .user_agent(concat!("tripline/", env!("CARGO_PKG_VERSION")).to_owned());
    for mb in to {
        builder = builder.to(mb.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            text_body(msg),
            html_body(msg),
        ))
        .map_err(|e| EmailError::Build(e.to_string()))
}

#[cfg(test)]
mod tests;
