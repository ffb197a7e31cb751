//! Strings limited by a regular expression: JSON Schema's `pattern` (Rust `regex`
//! syntax, as pydantic-core checks it; matched anywhere in the string unless
//! anchored) and the `format`s written as one (`date`, `time`, `date-time`, `uuid`,
//! `email`, `ipv4`). Inside such a string only characters that need no escape are written
//! (no `"`, `\` or control characters), so the automaton sees the string's own
//! bytes; the closing quote comes only where the whole string matches.
//!
//! The automaton is walked together with the UTF-8 position (continuation bytes
//! still expected) and the count of characters, so `minLength` or `maxLength` are
//! enforced too: from each state, the fewest and most characters to a match are
//! known.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use regex_automata::dfa::{dense, Automaton};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;

/// The most memory one string's automaton may take (a `pattern` in a request cannot
/// make the host build an exponential DFA).
const DFA_BYTES: usize = 4 << 20;
/// Most (state, UTF-8 position) pairs walked when measuring an automaton.
const MAX_NODES: usize = 1 << 17;
/// `Reach::longest` when matches can be of any length.
pub const UNBOUNDED: u32 = u32::MAX;

/// Characters still to write before a match: at least `shortest`, at most `longest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub shortest: u32,
    pub longest: u32,
}

/// A string's automaton, shared by the schema's nodes.
pub struct StringRegex {
    /// What it enforces (`the pattern "..."`, `the format 'date'`), for messages.
    what: String,
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
    /// For each live (state, continuation bytes expected): how far a match is. A
    /// pair not here can never end in a match.
    reach: HashMap<(StateID, u8), Reach>,
}

/// Compared by identity (a schema's nodes are compared in tests only).
#[derive(Clone)]
pub struct SharedRegex(pub Arc<StringRegex>);

impl PartialEq for SharedRegex {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for SharedRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.what)
    }
}

/// Where a string is in its automaton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextAt {
    state: StateID,
    /// UTF-8 continuation bytes still expected.
    rem: u8,
    chars: u32,
}

const YEAR: &str = "[1-9][0-9]{3}";
/// Years divisible by 4 and not by 100, or by 400 (1000-9999).
const LEAP_YEAR: &str =
    "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)";
const TIME: &str = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?";
const OFFSET: &str = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";

fn date() -> String {
    format!(
        "(?:{YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])\
         |(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)\
         |02-(?:0[1-9]|1[0-9]|2[0-8]))\
         |{LEAP_YEAR}-02-29)"
    )
}

/// The regular expression (whole-string) a supported `format` stands for: a
/// conservative subset of what the format allows, so that what is written passes
/// strict checkers (pydantic's included). None: the format is not supported.
pub fn format_regex(format: &str) -> Option<String> {
    let hex = "[0-9a-fA-F]";
    Some(match format {
        // Real calendar days (February 29th in leap years only), years 1000-9999.
        "date" => date(),
        // HH:MM:SS, up to 6 fractional digits, an optional offset.
        "time" => format!("{TIME}{OFFSET}?"),
        // RFC 3339: the offset is required.
        "date-time" => format!("{}T{TIME}{OFFSET}", date()),
        // Dotted quad, no leading zeros.
        "ipv4" => {
            let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
            format!("{octet}(?:\\.{octet}){{3}}")
        }
        "uuid" => format!("{hex}{{8}}-{hex}{{4}}-{hex}{{4}}-{hex}{{4}}-{hex}{{12}}"),
        // local@label.label.tld: a dot-atom local part of at most 63 characters,
        // one to three domain labels of at most 41 letters, digits and single
        // hyphens, and a top-level domain of two letters or a common generic one
        // (never a special-use name such as `test` or `local`).
        "email" => {
            let atext = "[A-Za-z0-9_%+-]";
            let label = "[A-Za-z0-9](?:-?[A-Za-z0-9]){0,20}";
            let tld = "(?:[A-Za-z]{2}|com|org|net|edu|gov|mil|int|info|biz|dev|app|xyz|online|site|tech|store|cloud|email|name|pro)";
            format!("{atext}(?:\\.?{atext}){{0,31}}@(?:{label}\\.){{1,3}}{tld}")
        }
        // An absolute http(s) URL (pydantic's `HttpUrl` and `AnyUrl` ask for `uri`):
        // a host name with a top-level domain of letters, `localhost` or a dotted
        // quad, an optional port, and path, query and fragment of RFC 3986's
        // unreserved and sub-delimiter characters and percent escapes.
        "uri" => {
            let label = "[A-Za-z0-9](?:-?[A-Za-z0-9]){0,20}";
            let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
            let host = format!(
                "(?:(?:{label}\\.){{1,4}}[A-Za-z]{{2,12}}|localhost|{octet}(?:\\.{octet}){{3}})"
            );
            let pchar = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
            format!(
                "https?://{host}(?::[1-9][0-9]{{0,4}})?(?:/{pchar}*)*(?:\\?(?:{pchar}|[/?])*)?(?:#(?:{pchar}|[/?])*)?"
            )
        }
        _ => return None,
    })
}

/// A `pattern` as a whole-string expression: JSON Schema patterns match anywhere in
/// the string (`^` and `$` anchor them). The pattern is parsed alone first and
/// written back from its syntax tree, so it cannot reach out of its group.
pub fn pattern_regex(pattern: &str) -> Result<String, String> {
    let hir = regex_automata::util::syntax::parse(pattern)
        .map_err(|e| format!("the pattern {pattern:?} cannot be used: {e}"))?;
    Ok(format!("(?s:.)*(?:{hir})(?s:.)*"))
}

fn ends_in_match(dfa: &dense::DFA<Vec<u32>>, state: StateID) -> bool {
    dfa.is_match_state(dfa.next_eoi_state(state))
}

/// A byte inside a string of unescaped characters, given the continuation bytes
/// expected: (continuation bytes expected after it, it begins a character).
fn string_byte(rem: u8, b: u8) -> Option<(u8, bool)> {
    Some(match (rem, b) {
        (0, b'"' | b'\\' | 0x00..=0x1f) => return None,
        (0, 0x20..=0x7f) => (0, true),
        (0, 0xc2..=0xdf) => (1, true),
        (0, 0xe0..=0xef) => (2, true),
        (0, 0xf0..=0xf4) => (3, true),
        (1..=3, 0x80..=0xbf) => (rem - 1, false),
        _ => return None,
    })
}

impl StringRegex {
    /// Builds the automaton of `regex` (whole-string); `what` names it in messages.
    pub fn compile(regex: &str, what: &str) -> Result<Self, String> {
        let cannot = |why: String| format!("{what} cannot be used: {why}");
        let dfa = super::pattern::whole_match_dfa(regex, DFA_BYTES).map_err(cannot)?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| cannot(e.to_string()))?;
        let reach = measure(&dfa, start).ok_or_else(|| cannot("it is too complex".into()))?;
        if !reach.contains_key(&(start, 0)) {
            return Err(format!(
                "{what} cannot be matched by a string written without escapes"
            ));
        }
        Ok(StringRegex {
            what: what.to_string(),
            dfa,
            start,
            reach,
        })
    }

    /// The fewest and most characters of a whole match.
    pub fn lengths(&self) -> Reach {
        self.reach[&(self.start, 0)]
    }

    pub fn start(&self) -> TextAt {
        TextAt {
            state: self.start,
            rem: 0,
            chars: 0,
        }
    }

    /// The state after `b` (inside the string, not its closing quote), if a match of
    /// between `min` and `max` characters can still be made. (With both limits,
    /// only one of them may be tighter than the automaton's own lengths: see
    /// `schema.rs`.)
    pub fn next(&self, at: TextAt, b: u8, min: u32, max: Option<u32>) -> Option<TextAt> {
        let (rem, new_char) = string_byte(at.rem, b)?;
        let state = self.dfa.next_state(at.state, b);
        let reach = self.reach.get(&(state, rem))?;
        let chars = at.chars + new_char as u32;
        if max.is_some_and(|max| chars.saturating_add(reach.shortest) > max) {
            return None;
        }
        if reach.longest != UNBOUNDED && chars.saturating_add(reach.longest) < min {
            return None;
        }
        Some(TextAt { state, rem, chars })
    }

    /// The string may close here.
    pub fn may_close(&self, at: TextAt, min: u32) -> bool {
        at.rem == 0 && at.chars >= min && ends_in_match(&self.dfa, at.state)
    }
}

/// For each (state, continuation bytes expected) reachable from `start` through
/// unescaped string bytes and from which a match can be reached: the fewest and
/// most characters to it. None: too many pairs.
fn measure(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> Option<HashMap<(StateID, u8), Reach>> {
    let mut index: HashMap<(StateID, u8), usize> = HashMap::from([((start, 0), 0)]);
    let mut nodes = vec![(start, 0u8)];
    // Edges backwards: for each node, (predecessor, the edge begins a character).
    let mut into: Vec<Vec<(usize, bool)>> = vec![Vec::new()];
    let mut i = 0;
    while i < nodes.len() {
        let (state, rem) = nodes[i];
        for b in 0..=255u8 {
            let Some((next_rem, new_char)) = string_byte(rem, b) else {
                continue;
            };
            let next = dfa.next_state(state, b);
            if dfa.is_dead_state(next) || dfa.is_quit_state(next) {
                continue;
            }
            let j = *index.entry((next, next_rem)).or_insert_with(|| {
                nodes.push((next, next_rem));
                into.push(Vec::new());
                nodes.len() - 1
            });
            if nodes.len() > MAX_NODES {
                return None;
            }
            into[j].push((i, new_char));
        }
        i += 1;
    }
    let accepting: Vec<bool> = nodes
        .iter()
        .map(|&(s, rem)| rem == 0 && ends_in_match(dfa, s))
        .collect();
    // Fewest characters: a 0-1 breadth-first search backwards from the matches.
    let mut shortest = vec![u32::MAX; nodes.len()];
    let mut queue = VecDeque::new();
    for (n, _) in accepting.iter().enumerate().filter(|(_, a)| **a) {
        shortest[n] = 0;
        queue.push_back(n);
    }
    while let Some(n) = queue.pop_front() {
        for &(p, new_char) in &into[n] {
            let d = shortest[n] + new_char as u32;
            if d < shortest[p] {
                shortest[p] = d;
                if new_char {
                    queue.push_back(p);
                } else {
                    queue.push_front(p);
                }
            }
        }
    }
    let live: Vec<bool> = shortest.iter().map(|&d| d != u32::MAX).collect();
    // Most characters: nodes whose live successors are all settled settle, from the
    // matches backwards; those that never do reach a cycle (any length).
    let mut pending: Vec<usize> = vec![0; nodes.len()];
    for (n, preds) in into.iter().enumerate() {
        if live[n] {
            for &(p, _) in preds {
                pending[p] += 1;
            }
        }
    }
    let mut longest: Vec<Option<u64>> = (0..nodes.len())
        .map(|n| accepting[n].then_some(0))
        .collect();
    let mut settled = vec![false; nodes.len()];
    let mut ready: Vec<usize> = (0..nodes.len())
        .filter(|&n| live[n] && pending[n] == 0)
        .collect();
    while let Some(n) = ready.pop() {
        settled[n] = true;
        let here = longest[n].expect("a settled live node reaches a match");
        for &(p, new_char) in &into[n] {
            if !live[p] {
                continue;
            }
            let via = here + new_char as u64;
            longest[p] = Some(longest[p].map_or(via, |l| l.max(via)));
            pending[p] -= 1;
            if pending[p] == 0 {
                ready.push(p);
            }
        }
    }
    Some(
        (0..nodes.len())
            .filter(|&n| live[n])
            .map(|n| {
                let longest = match (settled[n], longest[n]) {
                    (true, Some(l)) => l.min(UNBOUNDED as u64 - 1) as u32,
                    _ => UNBOUNDED,
                };
                (
                    nodes[n],
                    Reach {
                        shortest: shortest[n],
                        longest,
                    },
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(source: &str) -> StringRegex {
        StringRegex::compile(source, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Some(true): a whole match; Some(false): a live prefix; None: refused.
    fn walk(r: &StringRegex, text: &str, min: u32, max: Option<u32>) -> Option<bool> {
        let mut at = r.start();
        for &b in text.as_bytes() {
            at = r.next(at, b, min, max)?;
        }
        Some(r.may_close(at, min))
    }

    #[test]
    fn lengths_are_measured_in_characters() {
        assert_eq!(
            regex("ab|cdé").lengths(),
            Reach {
                shortest: 2,
                longest: 3
            }
        );
        assert_eq!(regex("a+").lengths().longest, UNBOUNDED);
        let r = regex("[a-z]+");
        assert_eq!(walk(&r, "abc", 0, Some(3)), Some(true));
        assert_eq!(walk(&r, "abcd", 0, Some(3)), None);
        assert_eq!(walk(&r, "ab", 3, None), Some(false));
        let r = regex("a{1,2}(?:b|é)?");
        // "aa" could still become "aab" (3 characters), "a" cannot reach 4.
        assert_eq!(walk(&r, "aa", 3, None), Some(false));
        assert_eq!(walk(&r, "aaé", 3, None), Some(true));
        assert_eq!(walk(&r, "a", 4, None), None);
    }

    #[test]
    fn quotes_backslashes_and_controls_are_never_written() {
        let r = regex("(?s:.)*");
        assert_eq!(walk(&r, "a b é ✓", 0, None), Some(true));
        for bad in ["\"", "\\", "\n", "\u{1}"] {
            assert_eq!(walk(&r, bad, 0, None), None, "{bad:?}");
        }
        assert!(StringRegex::compile("\"", "it").is_err());
        assert!(StringRegex::compile("(a|b)*a(a|b){40}", "it").is_err());
    }
}
