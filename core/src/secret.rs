//! Secret fingerprinting: raw API keys never get past the front door.
//!
//! Every message is redacted *before* it is parsed, stored, logged or sent to the dead-letter
//! topic. Key-shaped tokens (`sk-…`, `AIza…`, `ghp_…`, JWTs, …), the values of secret-bearing
//! fields (`api_key`, `authorization`, `password`, …), secret query parameters (`?key=…`) and
//! bearer tokens are replaced by an HMAC-SHA256 fingerprint keyed by an operator secret, so the
//! same key always maps to the same stable, non-reversible id.
//!
//! Redaction matches what the JSON parser will see, in three steps:
//!
//! 1. **Fast path** (`scan`). The message, with ASCII case folded, goes through three SIMD
//!    literal searches for distinctive pieces of everything below (`CLUES`: `sk-`, `aiza`,
//!    `key"`, `ecret`, `\u00`, …); each hit is checked by a look at a few bytes around it.
//!    Nothing left (the common case): the message is borrowed untouched.
//! 2. **Byte path.** JSON `\uXXXX` escapes of printable ASCII and `\/` are decoded first (JSON
//!    never needs them, and the parser decodes them: `"api\u005fkey"` *is* `api_key`), then the
//!    anchored patterns of `Patterns` are tried where the fast path's hits say they may match,
//!    and what they find is fingerprinted in place. Key order, numbers and everything else stay
//!    byte for byte.
//! 3. **Value path.** When a secret-named field holds something other than a string (an array of
//!    header values, an object, a number), or a string carries escaped JSON with secret names,
//!    the message is parsed into a [`serde_json::Value`]; secret-named values are fingerprinted
//!    whatever their type, every other string (and every name) is redacted recursively after
//!    unescaping, and the value is re-serialized (compact, keys sorted). Invalid JSON stays on
//!    the byte path: it is dead-lettered, redacted as well as its bytes allow.
//!
//! Already-fingerprinted values (`fp_` + 24 hex digits) are left alone, so redaction is
//! idempotent.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use regex::bytes::Regex;
use serde_json::Value;
use sha2::Sha256;

mod escape;
mod scan;

use escape::{decode_plain_escapes, string_end, unescape};
use scan::{patterns, scan, Scan};

/// Prefix of every fingerprint; values that already are a fingerprint are left alone.
pub const FINGERPRINT_PREFIX: &str = "fp_";

/// Hex digits after the prefix.
const FINGERPRINT_HEX: usize = 24;

/// Field names whose value is always a secret, whatever its JSON type. Compared ASCII
/// case-insensitively with `-` and `_` alike (`X-Api-Key` is `x_api_key`).
const SECRET_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "x_api_key",
    "api_token",
    "x_goog_api_key",
    "ocp_apim_subscription_key",
    "authorization",
    "proxy_authorization",
    "secret_key",
    "client_secret",
    "private_key",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "password",
    "passwd",
    "cookie",
    "set_cookie",
    "aws_secret_access_key",
    "secret_access_key",
    "aws_session_token",
    "session_token",
    "x_amz_security_token",
];

/// Query-string parameters whose value is a secret (`?api-key=…`, `&sig=…`).
const QUERY_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "key",
    "x_goog_api_key",
    "subscription_key",
    "access_token",
    "refresh_token",
    "token",
    "client_secret",
    "password",
    "sig",
    "signature",
];

/// Key shapes of the major providers. No word boundary before them, so `\nsk-…` (JSON text)
/// and `Bearer%20sk-…` (URL-encoded) are caught; the short prefixes are guarded in code
/// ([`guarded_prefix`]). No boundary after either: Google keys may end in `-` or `_`, so they
/// are matched by their exact length.
const TOKENS: &str = concat!(
    r"sk-[A-Za-z0-9_\-]{20,}", // OpenAI (sk-proj-, sk-svcacct-), Anthropic (sk-ant-), DeepSeek, LiteLLM
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", // Stripe-style
    r"|AIza[0-9A-Za-z_\-]{35}", // Google AI Studio / Gemini
    r"|gsk_[A-Za-z0-9]{20,}",  // Groq
    r"|xai-[A-Za-z0-9]{20,}",  // xAI
    r"|hf_[A-Za-z0-9]{20,}",   // Hugging Face
    r"|r8_[A-Za-z0-9]{20,}",   // Replicate
    r"|pplx-[A-Za-z0-9]{20,}", // Perplexity
    r"|A(?:KI|SI)A[0-9A-Z]{16}", // AWS access key ids, long-lived and temporary (Bedrock)
    r"|gh[pousr]_[A-Za-z0-9]{30,}", // GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{30,}", // GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}", // Slack
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*", // JWT
);

/// A token with one of these prefixes right after a letter, digit or `_` (`task-…`, `disk-…`)
/// is only taken when what follows its prefix looks like a key ([`looks_random`]): at least
/// [`ADJACENT_MIN_BODY`] characters (real keys are that long, LiteLLM's 22-character virtual
/// keys excepted), with capitals or digits and at most one separator in eight. A JSON escape
/// (`\n`) or a percent-escape (`%20`) before it counts as a boundary.
const GUARDED_PREFIXES: &[&[u8]] = &[
    b"sk-", b"sk_", b"rk_", b"gsk_", b"xai-", b"hf_", b"r8_", b"pplx-", b"xox",
];
const ADJACENT_MIN_BODY: usize = 32;

/// Further byte-path rounds after the first, at most.
const MAX_ROUNDS: usize = 4;

/// Nesting of JSON-in-a-string that the value path follows before it stays on bytes.
const MAX_DEPTH: u8 = 4;

/// Whether `name` is a secret-bearing field name (ASCII case-insensitive, `-` and `_` alike).
pub fn is_secret_name(name: &str) -> bool {
    if name.len() > 32 {
        return false;
    }
    let normal: String = name
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    SECRET_NAMES.contains(&normal.as_str())
}

/// Whether `value` is exactly a fingerprint (`fp_` + 24 lowercase hex digits).
pub fn is_fingerprint(value: &[u8]) -> bool {
    value.len() == FINGERPRINT_PREFIX.len() + FINGERPRINT_HEX
        && value.starts_with(FINGERPRINT_PREFIX.as_bytes())
        && value[FINGERPRINT_PREFIX.len()..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

/// One match of the byte path.
enum Found {
    /// Replace `start..end` with `with`, then search on from `resume`.
    Replace {
        start: usize,
        end: usize,
        with: Vec<u8>,
        resume: usize,
    },
    /// Already a fingerprint: skip to `end`.
    Keep { end: usize },
}

impl Found {
    fn end(&self) -> usize {
        match self {
            Found::Replace { resume, .. } => *resume,
            Found::Keep { end } => *end,
        }
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.mac.clone();
        mac.update(raw);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(FINGERPRINT_PREFIX.len() + FINGERPRINT_HEX);
        out.push_str(FINGERPRINT_PREFIX);
        for byte in &digest[..FINGERPRINT_HEX / 2] {
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
        out
    }

    /// Replaces every secret in a raw message with its fingerprint. Borrows when there is none,
    /// which is the common case and costs one prefiltered regex scan.
    pub fn redact<'a>(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        self.redact_at(raw, 0)
    }

    fn redact_at<'a>(&self, raw: &'a [u8], depth: u8) -> Cow<'a, [u8]> {
        let mut found = scan(raw);
        if found.clean() {
            return Cow::Borrowed(raw);
        }
        let text = decode_plain_escapes(raw);
        if let Cow::Owned(decoded) = &text {
            found = scan(decoded);
        }
        let (replaced, mut needs_value) = self.replace_bytes(&text, found);
        let mut bytes = match replaced {
            Some(bytes) => bytes,
            None if needs_value && depth < MAX_DEPTH => text.into_owned(),
            // Nothing to replace: the message as it came (decoded escapes were only for the
            // patterns to see what the parser will).
            None => return Cow::Borrowed(raw),
        };
        // A fingerprint is longer than some keys: a run of key characters it now ends may have
        // become long enough to be a key. Again until nothing changes (in practice once).
        for _ in 0..MAX_ROUNDS {
            let (again, value) = self.replace_bytes(&bytes, scan(&bytes));
            needs_value |= value;
            match again {
                Some(again) => bytes = again,
                None => break,
            }
        }
        if needs_value && depth < MAX_DEPTH {
            if let Some(out) = self.redact_value(&bytes, depth) {
                return owned_unless_same(raw, out);
            }
        }
        owned_unless_same(raw, bytes)
    }

    /// The value path; `None` when `text` is not JSON.
    fn redact_value(&self, text: &[u8], depth: u8) -> Option<Vec<u8>> {
        let mut value: Value = serde_json::from_slice(text).ok()?;
        self.walk(&mut value, depth + 1);
        Some(serde_json::to_vec(&value).expect("a JSON value serializes"))
    }

    fn walk(&self, value: &mut Value, depth: u8) {
        match value {
            Value::String(s) => self.redact_string(s, depth),
            Value::Array(items) => items.iter_mut().for_each(|item| self.walk(item, depth)),
            Value::Object(map) => {
                for (mut name, mut item) in std::mem::take(map) {
                    if is_secret_name(&name) {
                        self.fingerprint_value(&mut item, depth);
                    } else {
                        self.walk(&mut item, depth);
                    }
                    self.redact_string(&mut name, depth);
                    map.insert(name, item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// The value of a secret-named field: every string and number in it becomes a fingerprint.
    fn fingerprint_value(&self, value: &mut Value, depth: u8) {
        match value {
            Value::String(s) => {
                if !is_fingerprint(s.as_bytes()) {
                    *s = self.fingerprint(s.as_bytes());
                }
            }
            Value::Number(n) => *value = Value::String(self.fingerprint(n.to_string().as_bytes())),
            Value::Array(items) => items
                .iter_mut()
                .for_each(|item| self.fingerprint_value(item, depth)),
            Value::Object(map) => {
                for (mut name, mut item) in std::mem::take(map) {
                    self.fingerprint_value(&mut item, depth);
                    self.redact_string(&mut name, depth);
                    map.insert(name, item);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn redact_string(&self, s: &mut String, depth: u8) {
        if let Cow::Owned(out) = self.redact_at(s.as_bytes(), depth) {
            *s = String::from_utf8(out)
                .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        }
    }

    /// The byte path: every match replaced in place (`None` when nothing changed), and whether
    /// the message needs the value path (a secret-named field holds an array, an object or a
    /// number; escaped JSON with a secret name; an escaped `\u` escape).
    fn replace_bytes(&self, text: &[u8], found: Scan) -> (Option<Vec<u8>>, bool) {
        let Scan {
            cands,
            mut needs_value,
            ..
        } = found;
        let mut out = Vec::new();
        let mut copied = 0;
        let mut changed = false;
        let mut pos = 0;
        while pos < text.len() {
            match self.find(text, &cands, pos, text.len(), &mut needs_value) {
                None => break,
                Some(Found::Keep { end }) => pos = end,
                Some(Found::Replace {
                    start,
                    end,
                    with,
                    resume,
                }) => {
                    out.extend_from_slice(&text[copied..start]);
                    out.extend_from_slice(&with);
                    copied = end;
                    changed = true;
                    pos = resume;
                }
            }
        }
        if !changed {
            return (None, needs_value);
        }
        out.extend_from_slice(&text[copied..]);
        (Some(out), needs_value)
    }

    /// The first match at a candidate in `from..limit` that is a secret (or already a
    /// fingerprint).
    fn find(
        &self,
        text: &[u8],
        cands: &[usize],
        from: usize,
        limit: usize,
        needs_value: &mut bool,
    ) -> Option<Found> {
        let first = cands.partition_point(|&c| c < from);
        let mut pos = from;
        for &at in &cands[first..] {
            if at >= limit {
                break;
            }
            if at < pos {
                continue;
            }
            match self.at(text, cands, at, needs_value) {
                At::Found(found) => return Some(found),
                At::Nothing => {}
                At::NotAKey(end) => pos = end,
            }
        }
        None
    }

    /// What matches at `at`.
    fn at(&self, text: &[u8], cands: &[usize], at: usize, needs_value: &mut bool) -> At {
        let p = patterns();
        let rest = &text[at..];
        let head = |re: &Regex| re.find(rest).map(|m| at + m.end());
        // A value read in code: `levels` times JSON-unescaped for its fingerprint.
        let value = |levels: u8, start: usize, end: usize, match_end: usize| {
            let raw = &text[start..end];
            At::Found(if is_fingerprint(raw) {
                Found::Keep { end: match_end }
            } else {
                Found::Replace {
                    start,
                    end,
                    with: self.fingerprint(&unescape(raw, levels)).into_bytes(),
                    resume: match_end,
                }
            })
        };
        let compound = |start: usize, escaped: bool| {
            let (end, with) = self.redact_compound(text, start, escaped);
            At::Found(match with {
                Some(with) => Found::Replace {
                    start,
                    end,
                    with,
                    resume: end,
                },
                None => Found::Keep { end },
            })
        };
        let run = |start: usize, ok: &dyn Fn(u8) -> bool| {
            start + text[start..].iter().take_while(|&&b| ok(b)).count()
        };
        match rest.first() {
            Some(b'"') => {
                let Some(v) = head(&p.field) else {
                    return At::Nothing;
                };
                match text.get(v) {
                    Some(b'"') => {
                        let end = string_end(text, v + 1, false);
                        if text.get(end) == Some(&b'"') {
                            return value(1, v + 1, end, end + 1);
                        }
                        At::Nothing
                    }
                    Some(b'[' | b'{' | b'-' | b'0'..=b'9') => {
                        *needs_value = true;
                        compound(v, false)
                    }
                    _ => At::Nothing,
                }
            }
            Some(b'\\') => {
                let Some(v) = head(&p.nested) else {
                    return At::Nothing;
                };
                *needs_value = true;
                if text[v..].starts_with(b"\\\"") {
                    let end = string_end(text, v + 2, true);
                    if text[end..].starts_with(b"\\\"") {
                        return value(2, v + 2, end, end + 2);
                    }
                    return At::Nothing;
                }
                match text.get(v) {
                    Some(b'[' | b'{' | b'-' | b'0'..=b'9') => compound(v, true),
                    _ => At::Nothing,
                }
            }
            Some(b'?' | b'&') => {
                let Some(v) = head(&p.query) else {
                    return At::Nothing;
                };
                let end = run(v, &|b| {
                    !matches!(
                        b,
                        b'&' | 0..=b' ' | b'"' | b'\'' | b'\\' | b'#' | b'<' | b'>'
                    )
                });
                if end > v {
                    return value(0, v, end, end);
                }
                At::Nothing
            }
            Some(b'b' | b'B') => {
                let Some(v) = head(&p.bearer) else {
                    return At::Nothing;
                };
                let end = run(v, &|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b));
                if end - v >= 16 {
                    return value(0, v, end, end);
                }
                At::Nothing
            }
            Some(_) => {
                if let Some(v) = head(&p.aws) {
                    let end = run(v, &|b| b.is_ascii_alphanumeric() || b"/+=".contains(&b));
                    if end - v >= 40 {
                        return value(0, v, end, end);
                    }
                }
                let Some(end) = head(&p.token) else {
                    return At::Nothing;
                };
                self.token(text, cands, at, end, needs_value)
            }
            None => At::Nothing,
        }
    }

    /// The key-shaped token at `start..end`, unless it is too short for where it stands.
    fn token(
        &self,
        text: &[u8],
        cands: &[usize],
        start: usize,
        end: usize,
        needs_value: &mut bool,
    ) -> At {
        let whole = |end: usize| {
            At::Found(Found::Replace {
                start,
                end,
                with: self.fingerprint(&text[start..end]).into_bytes(),
                resume: end,
            })
        };
        if !guarded(text, start, end) {
            return whole(end);
        }
        // Not a key by itself; but a key inside it (or overlapping its end) takes the whole
        // run with it, so that the fingerprint, longer than some keys, cannot make the run
        // long enough to be taken on a second pass.
        match self.find(text, cands, start + 1, end, needs_value) {
            Some(inner) => whole(end.max(inner.end())),
            None => At::NotAKey(end),
        }
    }
}

/// What a candidate position holds.
enum At {
    Found(Found),
    Nothing,
    /// A token too short for where it stands, with nothing inside: search on from its end.
    NotAKey(usize),
}

impl Fingerprinter {
    /// The array, object or number at `start` (the value of a secret-named field in invalid
    /// JSON), read leniently up to its end or the end of `text`: every string and number in it
    /// that is not a name becomes a fingerprint, as the value path would do; names get the byte
    /// path. `escaped`: the value is inside a JSON string (`[\"…\"]`), and ends with it.
    /// Returns where it ends and what replaces it (`None`: nothing to change).
    fn redact_compound(
        &self,
        text: &[u8],
        start: usize,
        escaped: bool,
    ) -> (usize, Option<Vec<u8>>) {
        // A number, and whatever word characters are glued to it in invalid JSON (so that what
        // follows the fingerprint is what followed the number).
        let number = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.' | b'_');
        let quote: &[u8] = if escaped { b"\\\"" } else { b"\"" };
        let mut out = Vec::new();
        let mut changed = false;
        let mut depth = 0usize;
        let mut i = start;
        while i < text.len() {
            let b = text[i];
            if text[i..].starts_with(quote) {
                let body_start = i + quote.len();
                let body_end = string_end(text, body_start, escaped);
                let body = &text[body_start..body_end];
                let closed = text[body_end..].starts_with(quote);
                let after = if closed {
                    body_end + quote.len()
                } else {
                    body_end
                };
                let next = text[after..].iter().find(|c| !c.is_ascii_whitespace());
                out.extend_from_slice(quote);
                if next == Some(&b':') {
                    match self.replace_bytes(body, scan(body)).0 {
                        Some(replaced) => {
                            out.extend_from_slice(&replaced);
                            changed = true;
                        }
                        None => out.extend_from_slice(body),
                    }
                } else if is_fingerprint(body) {
                    out.extend_from_slice(body);
                } else {
                    let levels = if escaped { 2 } else { 1 };
                    out.extend_from_slice(self.fingerprint(&unescape(body, levels)).as_bytes());
                    changed = true;
                }
                if closed {
                    out.extend_from_slice(quote);
                }
                i = after;
            } else if escaped && b == b'"' {
                // The end of the string the escaped value is in.
                break;
            } else if b.is_ascii_digit() || b == b'-' {
                let end = text[i..]
                    .iter()
                    .position(|&c| !number(c))
                    .map_or(text.len(), |n| i + n);
                out.extend_from_slice(quote);
                out.extend_from_slice(self.fingerprint(&text[i..end]).as_bytes());
                out.extend_from_slice(quote);
                changed = true;
                i = end;
            } else if let Some(word) = [&b"true"[..], b"false", b"null"]
                .into_iter()
                .find(|word| text[i..].starts_with(word))
            {
                out.extend_from_slice(word);
                i += word.len();
            } else if matches!(
                b,
                b'[' | b'{' | b']' | b'}' | b',' | b':' | b' ' | b'\t' | b'\r' | b'\n'
            ) {
                out.push(b);
                i += 1;
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            } else if escaped && b == b'\\' && matches!(text.get(i + 1), Some(b'n' | b't' | b'r')) {
                // Whitespace, escaped.
                out.extend_from_slice(&text[i..i + 2]);
                i += 2;
            } else {
                // Not JSON: the byte path goes on from here.
                break;
            }
            if depth == 0 {
                break;
            }
        }
        (i, changed.then_some(out))
    }
}

/// The guarded prefix `token` starts with, if any.
fn guarded_prefix(token: &[u8]) -> Option<usize> {
    GUARDED_PREFIXES
        .iter()
        .find(|prefix| token.starts_with(prefix))
        .map(|prefix| prefix.len())
}

/// Whether the token at `start..end` is too short for where it stands (see
/// [`GUARDED_PREFIXES`]).
fn guarded(text: &[u8], start: usize, end: usize) -> bool {
    let Some(prefix) = guarded_prefix(&text[start..end]) else {
        return false;
    };
    if start == 0 {
        return false;
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let before = text[start - 1];
    if !word(before) {
        return false;
    }
    let json_escape = start >= 2 && text[start - 2] == b'\\' && b"nrtbf".contains(&before);
    let percent_escape = start >= 3
        && text[start - 3] == b'%'
        && text[start - 2].is_ascii_hexdigit()
        && before.is_ascii_hexdigit();
    !(json_escape || percent_escape || looks_random(&text[start + prefix..end]))
}

/// Whether the body of a token glued to a word looks like a key rather than a slug
/// (`task-runner-for-the-nightly-batch-job`): long, with capitals or digits, few separators.
fn looks_random(body: &[u8]) -> bool {
    let separators = body.iter().filter(|&&b| b == b'-' || b == b'_').count();
    body.len() >= ADJACENT_MIN_BODY
        && separators * 8 <= body.len()
        && body
            .iter()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn owned_unless_same(raw: &[u8], out: Vec<u8>) -> Cow<'_, [u8]> {
    if out == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(out)
    }
}

/// The fingerprint secret is too short to be safe.
#[derive(Debug, thiserror::Error)]
#[error("fingerprint secret is {len} bytes; use at least 16 (e.g. `openssl rand -hex 32`)")]
pub struct FingerprintKeyError {
    len: usize,
}

#[cfg(test)]
mod tests;
