//! Secret fingerprinting: raw API keys never get past the front door.
//!
//! Every message is scanned as raw bytes *before* it is parsed, stored, logged or sent to the
//! dead-letter topic. Key-shaped tokens (`sk-…`, `AIza…`, …) and the values of secret-bearing
//! fields (`api_key`, `authorization`, …) are replaced by an HMAC-SHA256 fingerprint keyed by an
//! operator secret, so the same key always maps to the same stable, non-reversible id.

use std::borrow::Cow;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use regex::bytes::{Captures, Regex};
use sha2::Sha256;

/// Prefix of every fingerprint; values that already carry it are left alone.
pub const FINGERPRINT_PREFIX: &str = "fp_";

/// Key shapes of the major LLM providers, plus JSON fields whose value is always a secret.
/// ASCII word boundaries keep the whole pattern on the regex crate's fast DFA.
const SECRET_PATTERN: &str = r#"(?x)
    "(?i:api_key|apikey|api-key|x-api-key|authorization|secret_key)"\s*:\s*"((?:[^"\\]|\\.)*)"
  | (?-u:\b)(?:
        sk-[A-Za-z0-9_\-]{20,}          # OpenAI, Anthropic (sk-ant-), LiteLLM virtual keys, DeepSeek
      | sk_(?:live|test)_[A-Za-z0-9]{16,}
      | AIza[0-9A-Za-z_\-]{35}          # Google AI Studio / Gemini
      | gsk_[A-Za-z0-9]{20,}            # Groq
      | xai-[A-Za-z0-9]{20,}            # xAI
      | hf_[A-Za-z0-9]{20,}             # Hugging Face
      | r8_[A-Za-z0-9]{20,}             # Replicate
      | pplx-[A-Za-z0-9]{20,}           # Perplexity
      | AKIA[0-9A-Z]{16}                # AWS access key id (Bedrock)
    )(?-u:\b)
"#;

fn secret_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(SECRET_PATTERN).expect("secret pattern compiles"))
}

/// Turns raw secrets into stable HMAC-SHA256 fingerprints (`fp_` + 24 hex digits).
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<secret>)")
    }
}

impl Fingerprinter {
    /// `secret` is the operator's fingerprint key; it must be long enough to resist guessing.
    pub fn new(secret: &[u8]) -> Result<Self, FingerprintKeyError> {
        if secret.len() < 16 {
            return Err(FingerprintKeyError { len: secret.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
        Ok(Self { mac })
    }

    /// The fingerprint of one raw secret.
    pub fn fingerprint(&self, raw: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(raw);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(FINGERPRINT_PREFIX.len() + 24);
        out.push_str(FINGERPRINT_PREFIX);
        for byte in &digest[..12] {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// Replaces every secret in a raw message with its fingerprint. Borrows when there is none,
    /// which is the common case and costs one prefiltered regex scan.
    pub fn redact<'a>(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        let re = secret_regex();
        if !re.is_match(raw) {
            return Cow::Borrowed(raw);
        }
        let replaced = re.replace_all(raw, |caps: &Captures<'_>| match caps.get(1) {
            Some(value) if !value.as_bytes().starts_with(FINGERPRINT_PREFIX.as_bytes()) => {
                let whole = caps.get(0).expect("group 0 always matches");
                let head = &raw[whole.start()..value.start()];
                let mut out = head.to_vec();
                out.extend_from_slice(self.fingerprint(value.as_bytes()).as_bytes());
                out.push(b'"');
                out
            }
            Some(_) => caps[0].to_vec(),
            None => self.fingerprint(&caps[0]).into_bytes(),
        });
        Cow::Owned(replaced.into_owned())
    }
}

/// The fingerprint secret is too short to be safe.
#[derive(Debug, thiserror::Error)]
#[error("fingerprint secret is {len} bytes; use at least 16 (e.g. `openssl rand -hex 32`)")]
pub struct FingerprintKeyError {
    len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprinter {
        Fingerprinter::new(b"0123456789abcdef-test").unwrap()
    }

    #[test]
    fn fingerprint_is_stable_and_keyed() {
        let a = fp().fingerprint(b"sk-secret");
        assert_eq!(a, fp().fingerprint(b"sk-secret"));
        assert_eq!(a.len(), 3 + 24);
        let other = Fingerprinter::new(b"another-secret-key!!").unwrap();
        assert_ne!(a, other.fingerprint(b"sk-secret"));
    }

    #[test]
    fn rejects_short_secret() {
        assert!(Fingerprinter::new(b"short").is_err());
    }

    #[test]
    fn clean_message_is_borrowed() {
        let raw = br#"{"event_id":"e1","api_key_id":"key-1","key_hint":"sk-...9f2c"}"#;
        assert!(matches!(fp().redact(raw), Cow::Borrowed(_)));
    }

    #[test]
    fn redacts_key_shaped_tokens_anywhere() {
        let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234";
        let raw = format!(r#"{{"user_agent":"curl Bearer {key}","api_key_id":"{key}"}}"#);
        let out = fp().redact(raw.as_bytes());
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.contains(key), "{text}");
        let expected = fp().fingerprint(key.as_bytes());
        assert_eq!(text.matches(&expected).count(), 2, "{text}");
    }

    #[test]
    fn redacts_secret_fields_whatever_their_shape() {
        let raw = br#"{"API_KEY" : "hunter2-not-key-shaped", "Authorization":"Bearer abc"}"#;
        let out = fp().redact(raw);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("Bearer abc"));
        assert!(text.contains(&fp().fingerprint(b"hunter2-not-key-shaped")));
        // Still valid JSON afterwards.
        serde_json::from_str::<serde_json::Value>(text).unwrap();
    }

    #[test]
    fn redacts_inside_malformed_json() {
        let raw = b"{not json at all AIzaSyA1234567890abcdefghijklmnopqrstuv and more";
        let out = fp().redact(raw);
        assert!(!String::from_utf8_lossy(&out).contains("AIzaSy"));
    }

    #[test]
    fn already_fingerprinted_values_are_kept() {
        let once = fp().redact(br#"{"api_key":"hunter2"}"#).into_owned();
        let twice = fp().redact(&once).into_owned();
        assert_eq!(once, twice);
    }
}
