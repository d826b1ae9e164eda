//! Request bodies: gzip decoding under a size cap, and splitting a batch into its items (a JSON
//! array, NDJSON, or one object) without parsing the items themselves, so that one malformed
//! item is refused on its own and its neighbours still go through.

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be turned into items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (after decoding); the number is the limit.
    TooLarge(usize),
    /// A `Content-Encoding` other than gzip/identity.
    UnsupportedEncoding(String),
    /// The gzip stream is corrupt.
    BadGzip(String),
    /// A JSON array whose brackets or strings do not close: its items cannot be told apart.
    Malformed(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(limit) => write!(f, "body is larger than {limit} bytes"),
            Self::UnsupportedEncoding(enc) => {
                write!(
                    f,
                    "content-encoding {enc:?} is not supported (use gzip or none)"
                )
            }
            Self::BadGzip(err) => write!(f, "body is not valid gzip: {err}"),
            Self::Malformed(err) => write!(
                f,
                "body is not a JSON array, NDJSON or a JSON object: {err}"
            ),
        }
    }
}

/// Decodes the body per its `Content-Encoding`, refusing to inflate past `limit` bytes (a
/// small gzip bomb must not take the process's memory).
pub fn decode<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, BodyError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(Cow::Borrowed(body))
        }
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            // MultiGzDecoder: a body made of several gzip members is one stream (RFC 1952).
            let decoder = flate2::read::MultiGzDecoder::new(body);
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|err| BodyError::BadGzip(err.to_string()))?;
            if out.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

/// The items of a batch, as byte ranges of the body.
///
/// - starts with `[`: a JSON array; items are its top-level elements;
/// - one JSON value in all: that value (LiteLLM's `single` format, or a pretty-printed object);
/// - otherwise NDJSON: one item per non-blank line.
pub fn split(body: &[u8]) -> Result<Vec<&[u8]>, BodyError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    if start == body.len() {
        return Ok(Vec::new());
    }
    if body[start] == b'[' {
        return split_array(&body[start..]);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Ok(vec![trim(body)]);
    }
    Ok(body
        .split(|&b| b == b'\n')
        .map(trim)
        .filter(|line| !line.is_empty())
        .collect())
}

/// Splits `[a, b, …]` at its top-level commas, tracking strings and nesting only, so that an
/// element that is not valid JSON is still one element (refused later on its own).
fn split_array(body: &[u8]) -> Result<Vec<&[u8]>, BodyError> {
    debug_assert_eq!(body.first(), Some(&b'['));
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut item_start = 1;
    for (i, &b) in body.iter().enumerate().skip(1) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b',' if depth == 0 => {
                items.push(trim(&body[item_start..i]));
                item_start = i + 1;
            }
            b']' => {
                let last = trim(&body[item_start..i]);
                // `[]` has no items; `[a,]` has an empty last item, which is refused as invalid.
                if !last.is_empty() || !items.is_empty() {
                    items.push(last);
                }
                if !trim(&body[i + 1..]).is_empty() {
                    return Err(BodyError::Malformed(format!(
                        "unexpected data after the closing ']' at byte {}",
                        i + 1
                    )));
                }
                return Ok(items);
            }
            b'}' => {
                return Err(BodyError::Malformed(format!("unbalanced '}}' at byte {i}")));
            }
            _ => {}
        }
    }
    Err(BodyError::Malformed(
        "the JSON array is not closed (a missing ']' or an unterminated string)".into(),
    ))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn texts(items: Vec<&[u8]>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect()
    }

    #[test]
    fn array_elements_split_at_top_level_commas() {
        let body = br#" [ {"a":[1,2],"s":"x,]}\"y"}, {bad json} ,{"b":{"c":2}} ] "#;
        assert_eq!(
            texts(split(body).unwrap()),
            [
                r#"{"a":[1,2],"s":"x,]}\"y"}"#,
                "{bad json}",
                r#"{"b":{"c":2}}"#
            ]
        );
        assert!(split(b"[]").unwrap().is_empty());
        assert_eq!(texts(split(b"[1,]").unwrap()), ["1", ""]);
    }

    #[test]
    fn unclosed_or_trailing_array_is_malformed() {
        assert!(matches!(
            split(br#"[{"a":"]"#),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(split(b"[1] x"), Err(BodyError::Malformed(_))));
        assert!(matches!(split(b"[1}]"), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn ndjson_lines_and_single_objects() {
        let body = b"{\"a\":1}\r\n\n  {oops\n{\"b\":2}\n";
        assert_eq!(
            texts(split(body).unwrap()),
            ["{\"a\":1}", "{oops", "{\"b\":2}"]
        );
        let pretty = b"{\n  \"a\": 1,\n  \"b\": [1,\n 2]\n}\n";
        assert_eq!(split(pretty).unwrap().len(), 1);
        assert!(split(b"  \n ").unwrap().is_empty());
    }

    #[test]
    fn gzip_is_decoded_under_a_cap() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b'x'; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decode(Some("gzip"), &gz, 10_000).unwrap().len(), 10_000);
        assert_eq!(
            decode(Some("GZIP"), &gz, 9_999),
            Err(BodyError::TooLarge(9_999))
        );
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 100),
            Err(BodyError::BadGzip(_))
        ));
        assert!(matches!(
            decode(Some("br"), b"x", 100),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert_eq!(decode(None, &[1; 5], 4), Err(BodyError::TooLarge(4)));
        assert!(matches!(
            decode(Some("identity"), &[1; 4], 4),
            Ok(Cow::Borrowed(_))
        ));
    }
}
