//! A corpus of FAKE secrets, one of every format redaction must catch, and the places in an
//! event where they turn up. None of these keys is real: they were made with a seeded random
//! generator in each provider's shape. Shared by the unit tests of `secret` and by the
//! end-to-end test `tests/redaction_e2e.rs` (through `#[path]`), so it uses `std` only.

/// How a secret is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// By its shape, wherever it stands.
    Token,
    /// By its shape, except glued right after a letter or digit: too short to tell from a
    /// word there (a LiteLLM virtual key has 22 characters after `sk-`).
    ShortToken,
    /// Only by where it stands: a secret-named field, a query parameter,
    /// `aws_secret_access_key=` (Azure's 32 hex digits, AWS secret access keys).
    Context,
}

#[derive(Debug, Clone, Copy)]
pub struct FakeKey {
    pub provider: &'static str,
    pub key: &'static str,
    pub shape: Shape,
}

impl FakeKey {
    /// A distinctive slice from the middle of the key: what must never be found downstream.
    pub fn needle(&self) -> &'static str {
        let n = self.key.len();
        let len = (n / 2).min(12);
        &self.key[(n - len) / 2..(n - len) / 2 + len]
    }

    /// The name a header carrying this key has.
    fn header(&self) -> &'static str {
        match self.provider {
            "azure" => "Ocp-Apim-Subscription-Key",
            "aws_secret" => "aws_secret_access_key",
            "google_dash" | "google_underscore" => "x-goog-api-key",
            _ => "x-api-key",
        }
    }
}

const fn key(provider: &'static str, key: &'static str, shape: Shape) -> FakeKey {
    FakeKey {
        provider,
        key,
        shape,
    }
}

pub const KEYS: &[FakeKey] = &[
    key("openai_project", "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", Shape::Token),
    key("openai_legacy", "sk-t5yTDrm7I35wMkMp4t3skn2H7sCB2jZ5uK8pRA2pocvvDvkz", Shape::Token),
    key("litellm_virtual", "sk-ugk3fa9vo6iM713uwplt6y", Shape::ShortToken),
    key("anthropic", "sk-ant-api03-b-jT_uY704T9foyyM5jmqeLb7PwBH2N1zLePZlSfnK_9UpXdxgAyJ9ujjnk8hUJQQ_u-R3r4dv1ohf-crVQ3S8UH5NmknAA", Shape::Token),
    key("google_dash", "AIza_SOFFfI-D_-3l6BadJ7lMTi7yrNz63Rb_R-", Shape::Token),
    key("google_underscore", "AIzaI5mtYKsb6vs8fKBq2VlYjSnaWZfezCGGeM_", Shape::Token),
    key("groq", "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", Shape::Token),
    key("xai", "xai-Pci4oPLMaajn5dY9DUaPNqLJaqpQJk5JsxSssmIkhFuJ1tFnTCwE9mL26n3V2Q87w9Er1A6dXoy9cswU", Shape::Token),
    key("huggingface", "hf_74ZpGdv5fXSMKpPoTP0sbV0tmbbp3aeHe2", Shape::Token),
    key("replicate", "r8_C2MIMUBiDwHoBhu4UxJYCmHvLNtpzDKwu3P3E", Shape::Token),
    key("perplexity", "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", Shape::Token),
    key("aws_akia", "AKIA3C9H9CURDQEY889G", Shape::Token),
    key("aws_asia", "ASIA40PTB9CUPSI60AEA", Shape::Token),
    key("aws_secret", "b8TwKErDUJYsBrI3Sy/Gk6R1mX8aZ+6VCsyDxdHS", Shape::Context),
    key("azure", "54426143fc0106036246033f8366855d", Shape::Context),
    key("github_classic", "ghp_pFA8x5pj4e2Jekl5JEXhvG8sBRiz7fLm9Pvp", Shape::Token),
    key("github_oauth", "gho_16rKa78IVYsnvLrRKGyKDk4xGj413ElCA3A0", Shape::Token),
    key("github_fine_grained", "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", Shape::Token),
    key("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0cmlwbGluZS1mYWtlIiwiRBfpDN864w7lqPIPwGC5OFQvIMDtNk.QpFK89DMcUA9zFBEkhn6cJ7Qdoo2ClxWyWqbjmigC-z", Shape::Token),
    key("stripe", "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", Shape::Token),
    key("slack_bot", "xoxb-1795324331539-1623099386533-TOIHxJ6YnEXHOcAcMwrz7z9l", Shape::Token),
    key("slack_user", "xoxp-216305826693-219039733144-5491256135904-7cf7ee18beb83e5cae6df89069aa784c", Shape::Token),
];

/// One key in one position: JSON object members (no braces) to put in an event.
#[derive(Debug, Clone)]
pub struct Placement {
    pub position: &'static str,
    /// Top-level fields the members set (an event must not repeat them); a placement that
    /// sets `api_key` also drops `api_key_id`, so that the key's fingerprint becomes the id.
    pub fields: Vec<&'static str>,
    pub members: String,
    /// What must be fingerprinted whole (its fingerprint must be in the output).
    pub fingerprinted: Vec<String>,
}

fn place(
    position: &'static str,
    fields: &[&'static str],
    members: String,
    fingerprinted: &[String],
) -> Placement {
    Placement {
        position,
        fields: fields.to_vec(),
        members,
        fingerprinted: fingerprinted.to_vec(),
    }
}

/// `s` with its first character as a JSON `\u` escape.
fn first_escaped(s: &str) -> String {
    let first = s.as_bytes()[0];
    format!("\\u{:04x}{}", first, &s[1..])
}

/// Every position this key can be caught in.
pub fn placements(k: &FakeKey) -> Vec<Placement> {
    let key = k.key;
    let whole = [key.to_owned()];
    let header = k.header();
    let mut out = vec![
        place(
            "plain field",
            &["api_key", "api_key_id"],
            format!(r#""api_key":"{key}""#),
            &whole,
        ),
        place(
            "escaped field name",
            &["api_key", "api_key_id"],
            format!(r#""api\u005fkey":"{key}""#),
            &whole,
        ),
        place(
            "escaped header name",
            &["headers"],
            format!(r#""headers":{{"{}":"{key}"}}"#, first_escaped(header)),
            &whole,
        ),
        place(
            "array header",
            &["headers"],
            format!(r#""headers":{{"Authorization":["Bearer {key}"],"{header}":["{key}"]}}"#),
            &[format!("Bearer {key}"), key.to_owned()],
        ),
        place(
            "nested headers object",
            &["request"],
            format!(
                r#""request":{{"headers":{{"{header}":"{key}","Proxy-Authorization":"Basic {key}"}}}}"#
            ),
            &whole,
        ),
        place(
            "escaped JSON in a string",
            &["metadata"],
            format!(r#""metadata":"{{\"{header}\":\"{key}\",\"authorization\":[\"{key}\"]}}""#),
            &whole,
        ),
        place(
            "query string",
            &["request_id", "idempotency_key"],
            format!(
                r#""request_id":"https://gw.example/v1/models?alt=json&key={key}","idempotency_key":"/openai/deployments/x/chat?api-version=2024-06-01&api-key={key}""#
            ),
            &whole,
        ),
    ];
    if k.shape == Shape::Context {
        if k.provider == "aws_secret" {
            out.push(place(
                "free text after its name",
                &["user_agent"],
                format!(r#""user_agent":"boto3/1.34 AWS_SECRET_ACCESS_KEY={key}""#),
                &whole,
            ));
        }
        return out;
    }
    out.extend([
        place(
            "api_key_id",
            &["api_key_id"],
            format!(r#""api_key_id":"{key}""#),
            &whole,
        ),
        place("model", &["model"], format!(r#""model":"{key}""#), &whole),
        place(
            "user_agent",
            &["user_agent"],
            format!(r#""user_agent":"my-agent/1.0 ({key})""#),
            &whole,
        ),
        place(
            "after a JSON escape",
            &["user_agent"],
            format!(r#""user_agent":"line one\n{key}\tline two""#),
            &whole,
        ),
        place(
            "escaped first character",
            &["user_agent"],
            format!(r#""user_agent":"{}""#, first_escaped(key)),
            &whole,
        ),
        place(
            "URL-encoded",
            &["user_agent"],
            format!(r#""user_agent":"curl -H Authorization:Bearer%20{key}""#),
            &whole,
        ),
    ]);
    if k.shape == Shape::Token {
        out.push(place(
            "glued to a word",
            &["user"],
            format!(r#""user":"user{key}""#),
            &whole,
        ));
    }
    out
}
