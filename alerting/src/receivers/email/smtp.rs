//! The SMTP side of the email receiver: the URL that picks the transport's security, the
//! settings, and [`EmailReceiver::send`]. See the parent module for the rules.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{build, mailbox, EmailError};
use crate::receivers::delivery::DeliveryError;
use crate::receivers::Message;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// `smtps://host:465`, `smtp://host:587?tls=required` or `smtp://host:25`.
    pub smtp_url: String,
    /// `Tripline <alerts@example.com>`; its domain is the Message-ID domain.
    pub from: String,
    pub to: Vec<String>,
    /// Environment variables holding the SMTP user and password (both or neither).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// EHLO name; the machine's hostname when absent.
    #[serde(default)]
    pub hello_name: Option<String>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (port 465).
    ImplicitTls,
    /// `smtp://…?tls=required`: STARTTLS or nothing (port 587).
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    StartTlsOpportunistic,
    /// `smtp://`: no TLS, for local relays (port 25).
    Plain,
}

/// Where mail goes, parsed from the receiver's URL. `Display` is the URL without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, query) = match self.security {
            SmtpSecurity::ImplicitTls => ("smtps", ""),
            SmtpSecurity::StartTlsRequired => ("smtp", "?tls=required"),
            SmtpSecurity::StartTlsOpportunistic => ("smtp", "?tls=opportunistic"),
            SmtpSecurity::Plain => ("smtp", ""),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{query}", self.port)
    }
}

impl SmtpTarget {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let parsed = url::Url::parse(raw.trim());
        // Never echo a URL that may hold a password.
        let shown = match &parsed {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                let mut u = u.clone();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Ok(u) => u.to_string(),
            Err(_) if raw.contains('@') => "<unparseable, hidden>".to_owned(),
            Err(_) => raw.to_owned(),
        };
        let err = |reason: &str| EmailError::Url {
            url: shown.clone(),
            reason: reason.to_owned(),
        };
        let url = parsed.map_err(|e| err(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "credentials in the url are not accepted: set username_env and password_env",
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(err("no host")),
        };
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(err("no path or fragment expected"));
        }
        let mut tls = None;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), tls) {
                ("tls", None) => tls = Some(v.into_owned()),
                _ => {
                    return Err(err(
                        "the only query parameter is tls=required|opportunistic|none",
                    ))
                }
            }
        }
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => SmtpSecurity::ImplicitTls,
            ("smtp", Some("required")) => SmtpSecurity::StartTlsRequired,
            ("smtp", Some("opportunistic")) => SmtpSecurity::StartTlsOpportunistic,
            ("smtp", None | Some("none")) => SmtpSecurity::Plain,
            ("smtps", Some(_)) => return Err(err("smtps:// is always TLS; drop ?tls=")),
            ("smtp", Some(_)) => return Err(err("tls must be required, opportunistic or none")),
            _ => return Err(err("the scheme must be smtps or smtp")),
        };
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::StartTlsRequired | SmtpSecurity::StartTlsOpportunistic => 587,
            SmtpSecurity::Plain => 25,
        });
        Ok(Self {
            security,
            host,
            port,
        })
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

pub struct EmailReceiver {
    target: SmtpTarget,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailReceiver")
            .field("target", &self.target.to_string())
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish()
    }
}

impl EmailReceiver {
    /// Validates the settings and reads the credentials through `env` (`|k| std::env::var(k).ok()`
    /// in production). Does not connect.
    pub fn new(
        settings: &EmailSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EmailError> {
        let target = SmtpTarget::parse(&settings.smtp_url)?;
        let from = mailbox(&settings.from)?;
        if settings.to.is_empty() {
            return Err(EmailError::Config(
                "an email receiver needs at least one `to` address".into(),
            ));
        }
        let to = settings
            .to
            .iter()
            .map(|a| mailbox(a))
            .collect::<Result<Vec<_>, _>>()?;
        let read = |name: &String| env(name).ok_or_else(|| EmailError::MissingEnv(name.clone()));
        let credentials = match (&settings.username_env, &settings.password_env) {
            (Some(u), Some(p)) => Some(Credentials::new(read(u)?, read(p)?)),
            (None, None) => None,
            _ => {
                return Err(EmailError::Config(
                    "set both username_env and password_env, or neither".into(),
                ))
            }
        };
        if credentials.is_some() && target.security == SmtpSecurity::Plain && !target.is_loopback()
        {
            return Err(EmailError::Config(format!(
                "refusing to send smtp credentials unencrypted to {target}: use smtps:// or ?tls=required"
            )));
        }
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned()).map_err(|e| EmailError::Config(format!("tls: {e}")))
        };
        let mut builder = match target.security {
            SmtpSecurity::ImplicitTls => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
                    .tls(Tls::Wrapper(tls(&target.host)?))
            }
            SmtpSecurity::StartTlsRequired => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
                    .tls(Tls::Required(tls(&target.host)?))
            }
            SmtpSecurity::StartTlsOpportunistic => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
                    .tls(Tls::Opportunistic(tls(&target.host)?))
            }
            SmtpSecurity::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host).tls(Tls::None)
            }
        }
        .port(target.port)
        .timeout(Some(Duration::from_millis(settings.timeout_ms.max(1))));
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        if let Some(name) = &settings.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(Self {
            target,
            from,
            to,
            transport: builder.build(),
        })
    }

    pub fn target(&self) -> &SmtpTarget {
        &self.target
    }

    /// The email for one notification, from and to this receiver's addresses.
    pub fn message(
        &self,
        msg: &Message,
        sequence: u64,
        now: SystemTime,
    ) -> Result<lettre::Message, EmailError> {
        build(msg, sequence, &self.from, &self.to, now)
    }

    /// Sends one message (one connection). SMTP 5xx replies are [`DeliveryError::Permanent`];
    /// 4xx replies, timeouts, connection and TLS errors are [`DeliveryError::Transient`].
    pub async fn send(&self, msg: lettre::Message) -> Result<(), DeliveryError> {
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| smtp_error(&self.target, &e))
    }
}

fn smtp_error(target: &SmtpTarget, e: &lettre::transport::smtp::Error) -> DeliveryError {
    let mut message = format!("smtp {target}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    if e.is_permanent() {
        DeliveryError::Permanent(message)
    } else {
        DeliveryError::Transient(message)
    }
}
