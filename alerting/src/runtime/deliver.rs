//! The receivers built from `[[alerting.receivers]]`, and one delivery attempt for one outbox
//! entry. A receiver that cannot be built (a missing environment variable, a bad URL or secret)
//! is kept as its error: its notifications fail as configuration errors, visible in the log and
//! the `notifications` table, while the other receivers keep working.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tripline_core::config::{AlertingConfig, ReceiverConfig, ReceiverKind};

use super::outbox::OutboxEntry;
use crate::receivers::delivery::{DeliveryError, RateLimiter};
use crate::receivers::email::{EmailReceiver, EmailSettings};
use crate::receivers::http::HttpSender;
use crate::receivers::slack::SlackReceiver;
use crate::receivers::webhook::{WebhookReceiver, WebhookSecret};

/// A whole HTTP attempt (connect, send, answer) is cut off after this long.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment name the email receiver's SMTP user (from the URL) is read through.
const URL_USER: &str = "\0smtp-url-user";

pub enum Transport {
    Webhook(WebhookReceiver),
    Slack(SlackReceiver),
    Email(Box<EmailReceiver>),
    /// Built with an error: every notification fails with it.
    Broken(String),
}

pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub transport: Arc<Transport>,
    pub limiter: Option<RateLimiter>,
}

/// Every configured receiver by name, and the HTTP client they share.
pub struct Receivers {
    pub by_name: BTreeMap<String, Receiver>,
    pub http: HttpSender,
}

impl Receivers {
    pub fn from_config(
        config: &AlertingConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Receivers, DeliveryError> {
        let http = HttpSender::new(HTTP_TIMEOUT)?;
        let by_name = config
            .receivers
            .iter()
            .map(|r| {
                let transport = Arc::new(build(r, env).unwrap_or_else(Transport::Broken));
                let limiter = r
                    .effective_rate_limit_per_s()
                    .map(|rate| RateLimiter::new(rate, 1));
                let receiver = Receiver {
                    name: r.name.clone(),
                    kind: r.kind,
                    transport,
                    limiter,
                };
                (r.name.clone(), receiver)
            })
            .collect();
        Ok(Receivers { by_name, http })
    }

    /// Names and errors of the receivers that cannot deliver.
    pub fn broken(&self) -> Vec<(&str, &str)> {
        self.by_name
            .values()
            .filter_map(|r| match &*r.transport {
                Transport::Broken(e) => Some((r.name.as_str(), e.as_str())),
                _ => None,
            })
            .collect()
    }
}

fn url(r: &ReceiverConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    match (&r.url, &r.url_env) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(var)) => env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("environment variable {var} (url_env) is not set")),
        (None, None) => Err("no url or url_env".to_owned()),
    }
}

fn build(r: &ReceiverConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Transport, String> {
    match r.kind {
        ReceiverKind::Webhook => {
            let secret = match &r.secret_env {
                None => None,
                Some(var) => {
                    let raw = env(var).ok_or_else(|| {
                        format!("environment variable {var} (secret_env) is not set")
                    })?;
                    Some(WebhookSecret::parse(&raw).map_err(|e| format!("{var}: {e}"))?)
                }
            };
            Ok(Transport::Webhook(WebhookReceiver {
                url: url(r, env)?,
                secret,
                max_alerts: 0,
            }))
        }
        ReceiverKind::Slack => Ok(Transport::Slack(SlackReceiver { url: url(r, env)? })),
        ReceiverKind::Email => {
            let raw = r.smtp_url.clone().ok_or("no smtp_url")?;
            // The config names the SMTP user in the URL (`smtps://alerts@host`); the receiver
            // takes it from the environment lookup, so it is handed over under a private name.
            let mut parsed = url::Url::parse(raw.trim()).map_err(|e| format!("smtp_url: {e}"))?;
            let user = (!parsed.username().is_empty()).then(|| parsed.username().to_owned());
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let settings = EmailSettings {
                smtp_url: parsed.to_string(),
                from: r.from.clone().ok_or("no from address")?,
                to: r.to.clone(),
                username_env: user.as_ref().map(|_| URL_USER.to_owned()),
                password_env: r.smtp_password_env.clone(),
                timeout_ms: 30_000,
                hello_name: None,
            };
            let lookup = |name: &str| {
                if name == URL_USER {
                    user.clone()
                } else {
                    env(name)
                }
            };
            EmailReceiver::new(&settings, lookup)
                .map(|e| Transport::Email(Box::new(e)))
                .map_err(|e| e.to_string())
        }
    }
}

/// One attempt to deliver `entry` through `receiver`, at `now`.
pub async fn attempt(
    receiver: Arc<Transport>,
    http: HttpSender,
    entry: OutboxEntry,
    now: SystemTime,
) -> Result<(), DeliveryError> {
    match &*receiver {
        Transport::Webhook(w) => http.send(&w.request(&entry.message, &entry.id, now)).await,
        Transport::Slack(s) => http.send(&s.request(&entry.message)).await,
        Transport::Email(e) => {
            let mail = e
                .message(&entry.message, entry.sequence, now)
                .map_err(|err| DeliveryError::Permanent(err.to_string()))?;
            e.send(mail).await
        }
        Transport::Broken(err) => Err(DeliveryError::Permanent(format!(
            "receiver is misconfigured: {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::alerting_config;

    fn receivers(body: &str, env: &[(&str, &str)]) -> Receivers {
        let config = alerting_config(&format!("[alerting.route]\nreceiver = \"a\"\n{body}"));
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Receivers::from_config(&config, &|k| env.get(k).cloned()).unwrap()
    }

    #[test]
    fn receivers_come_from_the_config_and_the_environment() {
        let r = receivers(
            r#"
[[alerting.receivers]]
name = "a"
kind = "webhook"
url = "http://127.0.0.1:1/hook"
secret_env = "SECRET"

[[alerting.receivers]]
name = "s"
kind = "slack"
url_env = "SLACK_URL"

[[alerting.receivers]]
name = "m"
kind = "email"
smtp_url = "smtps://alerts@smtp.example.com"
smtp_password_env = "SMTP_PASSWORD"
from = "tripline@example.com"
to = ["oncall@example.com"]
"#,
            &[
                ("SECRET", "0123456789abcdef-secret"),
                ("SLACK_URL", "https://hooks.slack.com/services/T/B/x"),
                ("SMTP_PASSWORD", "pw"),
            ],
        );
        assert!(r.broken().is_empty(), "{:?}", r.broken());
        assert!(matches!(&*r.by_name["a"].transport, Transport::Webhook(w) if w.secret.is_some()));
        assert!(matches!(&*r.by_name["s"].transport, Transport::Slack(_)));
        assert!(r.by_name["s"].limiter.is_some(), "slack is paced");
        assert!(r.by_name["a"].limiter.is_none());
        match &*r.by_name["m"].transport {
            Transport::Email(e) => assert_eq!(e.target().host, "smtp.example.com"),
            _ => panic!("email"),
        }
    }

    #[test]
    fn a_missing_secret_breaks_only_its_receiver_and_says_which_variable() {
        let r = receivers(
            r#"
[[alerting.receivers]]
name = "a"
kind = "webhook"
url = "http://127.0.0.1:1/hook"

[[alerting.receivers]]
name = "s"
kind = "slack"
url_env = "SLACK_URL"

[[alerting.receivers]]
name = "m"
kind = "email"
smtp_url = "smtps://alerts@smtp.example.com"
smtp_password_env = "SMTP_PASSWORD"
from = "tripline@example.com"
to = ["oncall@example.com"]
"#,
            &[],
        );
        let broken = r.broken();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[0].0 == "m" && broken[0].1.contains("SMTP_PASSWORD"),
            "{broken:?}"
        );
        assert!(
            broken[1].0 == "s" && broken[1].1.contains("SLACK_URL"),
            "{broken:?}"
        );
        assert!(matches!(&*r.by_name["a"].transport, Transport::Webhook(w) if w.secret.is_none()));
    }
}
