//! Bearer tokens (`Authorization: Bearer <token>`, RFC 6750 §2.1), checked the same way by
//! every door that takes one: the collector's endpoints and the alerting API with its console.
//!
//! - The scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer` and `BEARER` are one.
//!   Spaces around the token are ignored; an empty token is no token.
//! - A token is compared as its SHA-256 digest, in constant time (`CtOutput`, the comparison
//!   `hmac` verifies tags with): how long an answer takes says nothing about how much of a
//!   token was right, nor about its length, since every digest is 32 bytes.

use std::fmt;

use hmac::digest::CtOutput;
use sha2::{Digest, Sha256};

/// A token the server accepts, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct TokenDigest(CtOutput<Sha256>);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(CtOutput::new(Sha256::digest(token.as_bytes())))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Which of `known` (each a name and the digest of its token) the `Authorization` header value
/// `authorization` carries as a bearer token; `None` for no header, another scheme, no token or
/// an unknown one. Every digest is compared, so the time taken does not depend on which matched.
pub fn authenticate<'a, K>(
    authorization: Option<&str>,
    known: impl IntoIterator<Item = (K, &'a TokenDigest)>,
) -> Option<K> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    let presented = TokenDigest::of(token);
    let mut found = None;
    for (name, expected) in known {
        if expected.0 == presented.0 {
            found = Some(name);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "token-of-the-api-0123";

    fn check(authorization: Option<&str>) -> bool {
        authenticate(authorization, [((), &TokenDigest::of(TOKEN))]).is_some()
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert!(check(Some("Bearer token-of-the-api-0123")));
        assert!(check(Some("bearer token-of-the-api-0123")));
        assert!(check(Some("BEARER token-of-the-api-0123")));
        assert!(check(Some("  bEaReR   token-of-the-api-0123  ")));
    }

    #[test]
    fn another_scheme_or_no_token_is_refused() {
        assert!(!check(Some("Basic token-of-the-api-0123")));
        assert!(!check(Some("Bearertoken-of-the-api-0123")));
        assert!(!check(Some("token-of-the-api-0123")));
        assert!(!check(Some("Bearer")));
        assert!(!check(Some("Bearer   ")));
        assert!(!check(Some("")));
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert!(!check(None));
    }

    #[test]
    fn a_wrong_token_is_refused() {
        assert!(!check(Some("Bearer token-of-the-api-0124")));
        assert!(!check(Some("Bearer TOKEN-OF-THE-API-0123")));
        // Shorter, longer (a prefix of the right one, the right one and more).
        assert!(!check(Some("Bearer token-of-the-api-012")));
        assert!(!check(Some("Bearer token-of-the-api-01234")));
        assert!(!check(Some("Bearer token-of-the-api-0123 x")));
    }

    #[test]
    fn the_matching_name_is_returned() {
        let a = TokenDigest::of("token-of-source-a-0123");
        let b = TokenDigest::of("token-of-source-b-4567");
        let known = [("a", &a), ("b", &b)];
        assert_eq!(
            authenticate(Some("Bearer token-of-source-b-4567"), known),
            Some("b")
        );
        assert_eq!(
            authenticate(Some("bearer token-of-source-a-0123"), known),
            Some("a")
        );
        assert_eq!(
            authenticate(Some("Bearer token-of-source-c-8901"), known),
            None
        );
        assert_eq!(
            authenticate::<&str>(Some("Bearer token-of-source-a-0123"), []),
            None
        );
    }
}
