//! Where in a message a secret may be: the fast path's literal search ([`CLUES`], [`scan`])
//! and the anchored patterns ([`Patterns`]) that the byte path tries at its hits.
//!
//! They live together, apart from the fingerprinting, because the clue table is written as a
//! superset of the patterns (every place a pattern can match has a clue) and both are compiled
//! from the same name lists in one place ([`patterns`]): a change to one is checked against the
//! other here.

use std::sync::OnceLock;

use regex::bytes::Regex;

use super::{QUERY_NAMES, SECRET_NAMES, TOKENS};

/// The fast path's literals, searched for in the message with every byte OR 0x20 ([`fold`]):
/// ASCII letters in lower case, `_` as 0x7f, `\` as `|` (other bytes move too, harmlessly).
/// Folding makes names and `Bearer` case-insensitive without thousands of literals; few,
/// distinctive literals keep the search on the regex engine's SIMD literal matcher (see
/// [`CLUE_SEARCHES`]). Each hit is then checked by [`Clue::confirms`]; together they hit
/// wherever one of the [`Patterns`] could match (a superset: the property tests check that no
/// corpus key gets through), or where an escape of a character they use is.
const CLUES: &[(&str, Clue, Role, usize)] = &[
    ("|u00", Clue::Escape, Role::Escape, 1),
    ("sk-", Clue::Then(b"", 0, KEY_CHARS, 20), Role::Token(0), 0),
    ("sk\x7f", Clue::Stripe, Role::Token(1), 0), // `gsk_` starts one before
    ("rk\x7f", Clue::Stripe, Role::Token(0), 0),
    ("aiza", Clue::Found, Role::Token(0), 1),
    ("akia", Clue::Then(b"", 0, ALNUM, 16), Role::Token(0), 1),
    ("asia", Clue::Then(b"", 0, ALNUM, 16), Role::Token(0), 1),
    ("xai-", Clue::Then(b"", 0, ALNUM, 20), Role::Token(0), 1),
    ("hf\x7f", Clue::Then(b"", 0, ALNUM, 20), Role::Token(0), 0),
    ("r8\x7f", Clue::Then(b"", 0, ALNUM, 20), Role::Token(0), 0),
    ("pplx", Clue::Then(b"-", 1, ALNUM, 20), Role::Token(0), 1),
    ("ghp\x7f", Clue::Found, Role::Token(0), 1),
    ("gho\x7f", Clue::Found, Role::Token(0), 1),
    ("ghu\x7f", Clue::Found, Role::Token(0), 1),
    ("ghs\x7f", Clue::Found, Role::Token(0), 1),
    ("ghr\x7f", Clue::Found, Role::Token(0), 1),
    ("github\x7fpat", Clue::Found, Role::Token(0), 1),
    ("xox", Clue::Then(b"abposr", 1, b"-", 1), Role::Token(0), 0),
    ("eyj", Clue::Then(b"", 0, KEY_CHARS, 8), Role::Token(0), 0),
    // Secret names, query parameters, `Bearer`, `secret_access_key`: each name holds one of
    // these. Names end in `key` or `token` before `"`, `\"` or `=`; that counts only when the
    // whole word is a secret or query name (not `idempotency_key`).
    ("key\"", Clue::Name, Role::Word, 2),
    ("key|", Clue::Name, Role::Word, 2),
    ("key=", Clue::Name, Role::Word, 2),
    ("oken\"", Clue::Name, Role::Word, 2),
    ("oken|", Clue::Name, Role::Word, 2),
    ("oken=", Clue::Name, Role::Word, 2),
    ("sig=", Clue::Name, Role::Word, 2),
    ("ure=", Clue::Name, Role::Word, 2), // signature=
    ("uthoriz", Clue::Found, Role::Word, 2),
    ("ecret", Clue::Found, Role::Secret, 2),
    ("assw", Clue::Found, Role::Word, 2),
    ("ookie", Clue::Found, Role::Word, 2),
    ("earer", Clue::Found, Role::Token(1), 2),
];

/// The literal searches of the fast path. A literal search slows down sharply past a dozen or
/// so literals (they share the SIMD matcher's eight buckets, whose false candidates then
/// multiply); three searches of 7, 12 and 13 literals cost less than one of 32 (measured:
/// about 490 against 700-900 ns on a 460-byte event). The numbers in [`CLUES`] say which
/// search a literal is in: short token prefixes, long ones, names.
const CLUE_SEARCHES: usize = 3;

/// Where the matches a confirmed literal stands for may start.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Decoded before the byte path: no match of its own.
    Escape,
    /// At the literal, or this many bytes before it.
    Token(usize),
    /// At the quote (`"`, `\"`) or `?`/`&` before the word the literal is in.
    Word,
    /// As [`Role::Word`], or at `secret`/`aws_secret` in free text.
    Secret,
}

/// Folded key characters: `[A-Za-z0-9_-]`.
const KEY_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\x7f-";
/// Folded `[A-Za-z0-9]`.
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a literal of the fast path needs to count.
#[derive(Debug, Clone, Copy)]
enum Clue {
    /// Nothing more.
    Found,
    /// `n` bytes from the first set, then `m` from the second.
    Then(&'static [u8], usize, &'static [u8], usize),
    /// A `\u00XX` escape of a character the patterns use (not `<`, `>`, …, which Go escapes in
    /// every message). (`\/` needs no clue of its own: the patterns with `/` in them, query
    /// values, bearer tokens and AWS secrets, have clues of their own.)
    Escape,
    /// `sk_live_`, `rk_test_`, `gsk_` + 20.
    Stripe,
    /// The word around it is a secret or query parameter name.
    Name,
}

impl Clue {
    /// Whether the literal at `start..end` of the folded message counts.
    fn confirms(self, folded: &[u8], start: usize, end: usize) -> bool {
        let after = &folded[end..];
        let run = |set: &[u8], n: usize, from: &[u8]| {
            from.len() >= n && from[..n].iter().all(|b| set.contains(b))
        };
        match self {
            Clue::Found => true,
            Clue::Then(first, n, second, m) => {
                run(first, n, after) && run(second, m, &after[n.min(after.len())..])
            }
            Clue::Escape => {
                let Some(decoded) = after.get(..2).and_then(hex2) else {
                    return false;
                };
                let word_after = || {
                    let rest = &after[2..];
                    let end = rest.iter().position(|&b| !is_word(b)).unwrap_or(rest.len());
                    QUERY_NAMES.iter().any(|name| same_name(name, &rest[..end]))
                };
                // An escaped escape (`\\u0041`: escaped JSON in a string) always counts.
                (start > 0 && folded[start - 1] == b'|')
                    || match decoded {
                        // What the patterns are made of, once decoded.
                        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => true,
                        b'_' | b'-' | b'.' | b'/' | b'+' | b'=' | b'%' | b':' | b' ' => true,
                        b'\'' | b'~' | b'[' | b'{' | b',' => true,
                        // `\u0026` is how Go writes every `&`: it counts before a query name.
                        b'&' | b'?' => word_after(),
                        // `<`, `>`, `!`, `#`, `;`, … take part in no pattern.
                        _ => false,
                    }
            }
            Clue::Stripe => {
                after.starts_with(b"live\x7f")
                    || after.starts_with(b"test\x7f")
                    || (start > 0 && folded[start - 1] == b'g' && run(ALNUM, 20, after))
            }
            Clue::Name => {
                // The word ends where the literal's terminator is.
                let end = end - 1;
                let from = folded[..end]
                    .iter()
                    .rposition(|&b| !is_word(b))
                    .map_or(0, |i| i + 1);
                let name = &folded[from..end];
                is_secret_word(name) || QUERY_NAMES.iter().any(|known| same_name(known, name))
            }
        }
    }
}

/// `raw` with every byte OR 0x20, into `buf` (see [`CLUES`]).
fn fold(raw: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(raw.len(), 0);
    for (folded, byte) in buf.iter_mut().zip(raw) {
        *folded = byte | 0x20;
    }
}

thread_local! {
    /// The folded message of the fast path, kept between calls.
    static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Folds `raw` and calls `hit` with every confirmed literal of [`CLUES`] (start, end, role),
/// in order within each search, until it returns `false`.
fn each_clue(raw: &[u8], mut hit: impl FnMut(&[u8], usize, usize, Role) -> bool) {
    FOLDED.with(|folded| {
        let mut folded = folded.borrow_mut();
        fold(raw, &mut folded);
        'searches: for (group, clues) in patterns().clues.iter().enumerate() {
            let mut pos = 0;
            while let Some(m) = clues.find_at(&folded, pos) {
                let (_, clue, role, _) = CLUES
                    .iter()
                    .find(|(literal, _, _, g)| *g == group && literal.as_bytes() == m.as_bytes())
                    .expect("a match is one of the literals");
                if clue.confirms(&folded, m.start(), m.end())
                    && !hit(&folded, m.start(), m.end(), *role)
                {
                    break 'searches;
                }
                // Literals may overlap (`asiakia…`): on from the next byte.
                pos = m.start() + 1;
            }
        }
        if folded.capacity() > 1 << 20 {
            // One huge message must not pin its size for the thread's life.
            *folded = Vec::new();
        }
    });
}

/// What the fast path found in a message.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Where the byte path's patterns may match, sorted.
    pub(super) cands: Vec<usize>,
    /// Something needs the value path: escaped JSON with a secret name, an escaped `\u` escape.
    pub(super) needs_value: bool,
    /// A `\u` escape of printable ASCII, to decode before the patterns can see what the parser
    /// will.
    escapes: bool,
}

impl Scan {
    /// Nothing that may be a secret: the common case.
    pub(super) fn clean(&self) -> bool {
        self.cands.is_empty() && !self.needs_value && !self.escapes
    }
}

/// The fast path: one pass of literal searches over the folded message ([`CLUES`]). Most
/// events have one or two hits (`sk-` of a `key_hint`, `key"` of `idempotency_key`), each
/// dismissed by a look at a few bytes, and come out [`Scan::clean`].
pub(super) fn scan(text: &[u8]) -> Scan {
    let mut out = Vec::new();
    let mut needs_value = false;
    let mut escapes = false;
    each_clue(text, |folded, start, _, role| {
        match role {
            Role::Escape => {
                escapes = true;
                needs_value |= start > 0 && folded[start - 1] == b'|';
            }
            Role::Token(back) => out.extend((0..=back).filter_map(|b| start.checked_sub(b))),
            Role::Word | Role::Secret => {
                let from = folded[..start]
                    .iter()
                    .rposition(|&b| !is_word(b))
                    .map_or(0, |i| i + 1);
                let to = folded[start..]
                    .iter()
                    .position(|&b| !is_word(b))
                    .map_or(folded.len(), |i| start + i);
                out.extend(from.checked_sub(1));
                if from >= 2 && &folded[from - 2..from] == b"|\"" {
                    out.push(from - 2);
                    needs_value |=
                        folded[to..].starts_with(b"|\"") && is_secret_word(&folded[from..to]);
                }
                if let Role::Secret = role {
                    // `secret_access_key`, `aws_secret_access_key`, in free text.
                    out.extend(
                        [1, 4, 5]
                            .into_iter()
                            .filter_map(|back| start.checked_sub(back)),
                    );
                }
            }
        }
        true
    });
    out.sort_unstable();
    out.dedup();
    Scan {
        cands: out,
        needs_value,
        escapes,
    }
}

/// A byte of a folded word: `[a-z0-9_-]` (`_` as 0x7f).
fn is_word(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, 0x7f | b'-')
}

/// Two folded hex digits (`00`-`7f`), as the byte they stand for.
fn hex2(digits: &[u8]) -> Option<u8> {
    let digit = |d: u8| (d as char).to_digit(16);
    Some((digit(digits[0])? * 16 + digit(digits[1])?) as u8)
}

/// Whether a folded word (`_` as 0x7f) is one of [`SECRET_NAMES`].
fn is_secret_word(word: &[u8]) -> bool {
    SECRET_NAMES.iter().any(|name| same_name(name, word))
}

/// Whether a folded word is `name` (lower case, `_`), `-` and `_` alike.
fn same_name(name: &str, word: &[u8]) -> bool {
    name.len() == word.len()
        && name
            .bytes()
            .zip(word)
            .all(|(k, &w)| k == w || (k == b'_' && matches!(w, 0x7f | b'-')))
}

/// `api_key` → `api[-_]key`, joined into one alternation.
fn alternation(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| name.replace('_', "[-_]"))
        .collect::<Vec<_>>()
        .join("|")
}

/// The regexes. Past the fast path, each is anchored at a candidate position ([`scan`])
/// and matches only the head of what it stands for; values are read in code. (Anchored
/// searches without capture groups stay on the regex engine's DFA.)
pub(super) struct Patterns {
    /// The fast path: the literals of [`CLUES`], one regex per search.
    clues: Vec<Regex>,
    /// `"api_key":` — a secret-named field; its value follows.
    pub(super) field: Regex,
    /// `\"api_key\":` — the same inside a JSON string (escaped JSON).
    pub(super) nested: Regex,
    /// `?api-key=` — a secret query parameter.
    pub(super) query: Regex,
    /// `Bearer ` — a bearer token in free text (a header dump, a curl command line).
    pub(super) bearer: Regex,
    /// `aws_secret_access_key=` — an AWS secret access key after its name, in free text.
    pub(super) aws: Regex,
    /// A key-shaped token ([`TOKENS`]).
    pub(super) token: Regex,
}

const WS: &str = r"[ \t\r\n]*";

pub(super) fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let names = alternation(SECRET_NAMES);
        let query = alternation(QUERY_NAMES);
        let aws = r"(?:aws[-_]?)?secret[-_]?access[-_]?key";
        let anchored =
            |pattern: String| Regex::new(&format!("^(?:{pattern})")).expect("pattern compiles");
        Patterns {
            clues: (0..CLUE_SEARCHES)
                .map(|group| {
                    let literals: Vec<String> = CLUES
                        .iter()
                        .filter(|clue| clue.3 == group)
                        .map(|(literal, ..)| regex::escape(literal).replace('\x7f', r"\x7f"))
                        .collect();
                    Regex::new(&format!("(?-u){}", literals.join("|"))).expect("clues compile")
                })
                .collect(),
            field: anchored(format!(r#""(?i-u:{names})"{WS}:{WS}"#)),
            nested: anchored(format!(r#"\\"(?i-u:{names})\\"{WS}:{WS}"#)),
            query: anchored(format!(r"[?&](?i-u:{query})=")),
            bearer: anchored(r"(?i-u:bearer)(?:[ \t]+|%20|\+)".to_owned()),
            aws: anchored(format!(
                r#"(?i-u:{aws})(?:\\?["'])?[ \t]*[:=][ \t]*(?:\\?["'])?"#
            )),
            token: anchored(TOKENS.to_owned()),
        }
    })
}
