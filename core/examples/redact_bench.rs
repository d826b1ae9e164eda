//! Times secret redaction per event: the current [`Fingerprinter::redact`] against the one it
//! replaced (kept below, for this comparison only), over a clean and a dirty event mix.
//!
//! ```text
//! cargo run --release -p tripline-core --example redact_bench [-- EVENTS ROUNDS]
//! ```
//!
//! - **clean**: contract-v1 events as `tripline simulate` writes them (gateway requests and
//!   provider attempts, ~400-550 bytes, a `key_hint` like `sk-…9f2c`, SDK user agents), one
//!   in ten with a `\u` escape the way Go's and Python's encoders write `&`, `<` or `é`;
//! - **`api_key`**: the same events sending the key itself as `api_key` (allowed by the
//!   contract), no other secret;
//! - **dirty**: the same events, each carrying one key of the test corpus
//!   (`core/src/secret/corpus.rs`) in one of its positions (plain field, escaped name, header
//!   array, nested headers, query string, model, user agent, …).
//!
//! Reports ns per event (the best of `ROUNDS` rounds over `EVENTS` events) and how many events
//! each redaction left borrowed (untouched).

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Instant;

use tripline_core::secret::Fingerprinter;

#[path = "../src/secret/corpus.rs"]
#[allow(dead_code)]
mod corpus;

/// A small deterministic generator (xorshift64*), so that every run times the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("google", "gemini-2.0-flash"),
    ("groq", "llama-3.3-70b-versatile"),
];
const USER_AGENTS: &[&str] = &[
    "openai-python/1.52.0",
    "OpenAI/JS 4.67.3",
    "litellm/1.50.0",
    "langchain-openai/0.2.3",
    "anthropic-sdk-python/0.39.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "curl/8.5.0",
];
const PROJECTS: &[&str] = &[
    "search",
    "support-bot",
    "checkout",
    "data-pipeline",
    "internal-tools",
];
const TEAMS: &[&str] = &["core", "growth", "platform", "ml"];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "ap-southeast-2"];

/// How often a user name carries a `\u` escape, as Go writes `&` and Python writes `é`.
#[derive(Clone, Copy)]
enum Escapes {
    None,
    /// In one event in ten: half `\u0026`, half `\u00e9`.
    Some,
    /// In every event, `\u0026`.
    All,
}

fn gateway(rng: &mut Rng, i: usize, escapes: Escapes) -> String {
    let (provider, model) = rng.pick(MODELS);
    let key = rng.below(1000);
    let user_agent = rng.pick(USER_AGENTS);
    let user = match (escapes, rng.below(10)) {
        (Escapes::All, _) | (Escapes::Some, 0) => format!("user-{}\\u0026co", rng.below(5000)),
        (Escapes::Some, 1) => format!("ren\\u00e9-{}", rng.below(5000)),
        _ => format!("user-{}", rng.below(5000)),
    };
    format!(
        r#"{{"schema_version":1,"event_id":"evt-{i:08}-{:x}","ts":{},"api_key_id":"key-{key:04}","key_hint":"sk-…{:04x}","project":"{}","team":"{}","user":"{user}","provider":"{provider}","model":"{model}","status":200,"prompt_tokens":{},"completion_tokens":{},"latency_ms":{},"client_ip":"91.{}.{}.{}","client_country":"DE","gateway_region":"{}","user_agent":"{user_agent}","request_id":"req-{i:08}","idempotency_key":"idem-{i:08}","attempt":1,"stream":{}}}"#,
        rng.next() & 0xffff_ffff,
        1_795_687_200_000 + i as i64 * 37,
        key & 0xffff,
        rng.pick(PROJECTS),
        rng.pick(TEAMS),
        rng.below(4000),
        rng.below(800),
        200 + rng.below(3000),
        rng.below(256),
        rng.below(256),
        rng.below(256),
        rng.pick(REGIONS),
        rng.below(2) == 0,
    )
}

fn provider(rng: &mut Rng, i: usize) -> String {
    let (provider, model) = rng.pick(MODELS);
    format!(
        r#"{{"schema_version":1,"event_id":"att-{i:08}-1","ts":{},"request_id":"req-{i:08}","api_key_id":"key-{:04}","provider":"{provider}","model":"{model}","attempt":1,"status":200,"provider_region":"eastus","latency_ms":{},"prompt_tokens":{},"completion_tokens":{}}}"#,
        1_795_687_200_000 + i as i64 * 37,
        rng.below(1000),
        200 + rng.below(3000),
        rng.below(4000),
        rng.below(800),
    )
}

fn clean_mix(events: usize, escapes: Escapes) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..events)
        .map(|i| {
            if rng.below(5) == 0 && !matches!(escapes, Escapes::All) {
                provider(&mut rng, i)
            } else {
                gateway(&mut rng, i, escapes)
            }
            .into_bytes()
        })
        .collect()
}

/// Events that send the key itself as `api_key` (the contract allows it), no other secret.
fn api_key_mix(events: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    (0..events)
        .map(|i| {
            let key = format!(
                "sk-proj-{:016x}{:016x}T3BlbkFJ{:016x}",
                rng.next(),
                rng.next(),
                rng.next()
            );
            gateway(&mut rng, i, Escapes::None)
                .replacen(
                    "\"api_key_id\":",
                    &format!("\"api_key\":\"{key}\",\"x\":"),
                    1,
                )
                .into_bytes()
        })
        .collect()
}

fn dirty_mix(events: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let placements: Vec<_> = corpus::KEYS.iter().flat_map(corpus::placements).collect();
    (0..events)
        .map(|i| {
            let placement = &placements[i % placements.len()];
            gateway(&mut rng, i, Escapes::None)
                .replacen('{', &format!("{{{},", placement.members), 1)
                .into_bytes()
        })
        .collect()
}

/// Best ns per event over `rounds` rounds, and how many events came back borrowed.
fn time(
    events: &[Vec<u8>],
    rounds: usize,
    redact: impl Fn(&[u8]) -> Cow<'_, [u8]>,
) -> (f64, usize) {
    let borrowed = events
        .iter()
        .filter(|e| matches!(redact(e), Cow::Borrowed(_)))
        .count();
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let started = Instant::now();
        for event in events {
            black_box(redact(black_box(event)));
        }
        best = best.min(started.elapsed().as_nanos() as f64 / events.len() as f64);
    }
    (best, borrowed)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(20_000, |a| a.parse().expect("EVENTS"));
    let rounds: usize = args.next().map_or(15, |a| a.parse().expect("ROUNDS"));
    let fingerprinter = Fingerprinter::new(b"redact-bench-fingerprint-secret").unwrap();
    let old = old::Fingerprinter::new(b"redact-bench-fingerprint-secret");
    for (name, mix) in [
        ("clean, no escapes", clean_mix(events, Escapes::None)),
        ("clean, 1 in 10 escaped", clean_mix(events, Escapes::Some)),
        (
            "clean, all escaped (\\u0026)",
            clean_mix(events, Escapes::All),
        ),
        ("`api_key` sent in every event", api_key_mix(events)),
        ("dirty", dirty_mix(events)),
    ] {
        let bytes = mix.iter().map(Vec::len).sum::<usize>() / mix.len();
        let (before, before_borrowed) = time(&mix, rounds, |e| old.redact(e));
        let (after, after_borrowed) = time(&mix, rounds, |e| fingerprinter.redact(e));
        println!(
            "{name}: {} events, {bytes} bytes on average: before {before:.0} ns/event ({before_borrowed} untouched), after {after:.0} ns/event ({after_borrowed} untouched)",
            mix.len()
        );
    }
}

/// The redaction this replaced (commit 3d4368e), verbatim but for the names.
mod old {
    use super::*;
    use hmac::{Hmac, Mac};
    use regex::bytes::{Captures, Regex};
    use sha2::Sha256;

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

    pub struct Fingerprinter {
        mac: Hmac<Sha256>,
    }

    impl Fingerprinter {
        pub fn new(secret: &[u8]) -> Self {
            Self {
                mac: Hmac::<Sha256>::new_from_slice(secret).unwrap(),
            }
        }

        fn fingerprint(&self, raw: &[u8]) -> String {
            let mut mac = self.mac.clone();
            mac.update(raw);
            let digest = mac.finalize().into_bytes();
            let mut out = String::from("fp_");
            for byte in &digest[..12] {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        }

        pub fn redact<'a>(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
            let re = secret_regex();
            if !re.is_match(raw) {
                return Cow::Borrowed(raw);
            }
            let replaced = re.replace_all(raw, |caps: &Captures<'_>| match caps.get(1) {
                Some(value) if !value.as_bytes().starts_with(b"fp_") => {
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
}
