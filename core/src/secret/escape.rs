//! Reading JSON string bodies as the parser will: where a string ends, what it says unescaped,
//! and the `\uXXXX` and `\/` escapes that are decoded so the patterns see what the parser sees.
//!
//! Kept apart from the fingerprinting because it is JSON lexing only: it knows nothing of
//! secrets; the byte path and its reading of compound values both read strings with it.

use std::borrow::Cow;

/// Where the body of a string starting at `start` ends: at its closing quote (`\"` when
/// `escaped`, where `\\\"` is an escaped quote inside), a bare `"` or the end of `text`.
pub(super) fn string_end(text: &[u8], start: usize, escaped: bool) -> usize {
    let mut i = start;
    while i < text.len() {
        match (text[i], escaped) {
            (b'"', _) => return i,
            (b'\\', false) => i += 2,
            (b'\\', true) => match (text.get(i + 1), text.get(i + 2), text.get(i + 3)) {
                (Some(b'"'), ..) => return i,
                // An escaped quote or backslash of the inner JSON: `\\\"`, `\\\\`.
                (Some(b'\\'), Some(b'\\'), Some(b'"' | b'\\')) => i += 4,
                // Another escape of the inner JSON: `\\n`.
                (Some(b'\\'), Some(c), _) if !matches!(c, b'"' | b'\\') => i += 3,
                // An escape of the outer string (`\n`), or a backslash of the inner text just
                // before the outer string ends.
                _ => i += 2,
            },
            _ => i += 1,
        }
    }
    text.len()
}

/// `raw` as the JSON parser would read it, `levels` times unescaped (0: as is). Falls back to
/// the bytes as they are when they are not a valid JSON string body.
pub(super) fn unescape(raw: &[u8], levels: u8) -> Cow<'_, [u8]> {
    let mut out = Cow::Borrowed(raw);
    for _ in 0..levels {
        if !out.contains(&b'\\') {
            break;
        }
        let mut quoted = Vec::with_capacity(out.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&out);
        quoted.push(b'"');
        match serde_json::from_slice::<String>(&quoted) {
            Ok(s) => out = Cow::Owned(s.into_bytes()),
            Err(_) => break,
        }
    }
    out
}

/// Decodes `\uXXXX` escapes of printable ASCII (other than `"` and `\`) and `\/`: JSON never
/// needs them, the parser decodes them, and decoded they are what the patterns look for.
/// Everything else, `\\` pairs included, is kept as it is.
pub(super) fn decode_plain_escapes(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < raw.len() {
        if raw[i] != b'\\' {
            i += 1;
            continue;
        }
        let decoded = match raw[i + 1] {
            b'/' => Some((b'/', 2)),
            b'u' => raw
                .get(i + 2..i + 6)
                .and_then(hex4)
                .and_then(|c| u8::try_from(c).ok())
                .filter(|c| (0x20..0x7f).contains(c) && *c != b'"' && *c != b'\\')
                .map(|c| (c, 6)),
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                let buf = out.get_or_insert_with(|| Vec::with_capacity(raw.len()));
                buf.extend_from_slice(&raw[copied..i]);
                buf.push(c);
                i += len;
                copied = i;
            }
            // Any other escape (or a `\\` pair) is skipped whole, so that `\\u0041` stays.
            None => i += 2,
        }
    }
    match out {
        Some(mut buf) => {
            buf.extend_from_slice(&raw[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(raw),
    }
}

/// Four hex digits, exactly.
fn hex4(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v as u16)
    })
}
