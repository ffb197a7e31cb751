//! Output that is one whole match of a regular expression (vLLM's `guided_regex`,
//! and `guided_choice` as an alternation of literals): regex-automata's DFA, walked
//! a byte at a time as tokens are tried.

use std::collections::{HashMap, HashSet};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// The most memory one pattern's automaton may take: a request cannot make the host
/// build an exponential DFA (`(a|b)*a(a|b){30}`); such a pattern is refused.
const DFA_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

/// The anchored DFA of `regex` in which every way the text may go on stays open (not
/// just the leftmost-first one), within `size_limit` bytes; else why not.
pub fn whole_match_dfa(regex: &str, size_limit: usize) -> Result<dense::DFA<Vec<u32>>, String> {
    dense::Builder::new()
        .configure(
            dense::DFA::config()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(size_limit))
                .determinize_size_limit(Some(size_limit)),
        )
        .build(regex)
        .map_err(|e| {
            // The builder's own message is terse ("error building NFA"); the syntax
            // error under it says where.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                why = format!("{why}: {inner}");
                source = inner.source();
            }
            why
        })
}

/// A compiled pattern; generations using it share it.
pub struct Pattern {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
    /// The states from which some continuation still makes a whole match. The DFA
    /// reports a match one byte late, so the byte after a complete match leads to a
    /// state that is not dead yet can never match again: only live states count.
    live: HashSet<StateID>,
}

impl Pattern {
    /// Rust `regex` syntax, matched against the whole output (anchored at both
    /// ends). Look-around and back-references do not exist in it.
    pub fn compile(pattern: &str) -> Result<Self, PatternError> {
        let dfa = whole_match_dfa(pattern, DFA_BYTES).map_err(|why| {
            PatternError(format!("the pattern {pattern:?} cannot be used: {why}"))
        })?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| PatternError(format!("the pattern {pattern:?} cannot be used: {e}")))?;
        let live = live_states(&dfa, start);
        Ok(Self { dfa, start, live })
    }

    pub fn start(&self) -> StateID {
        self.start
    }

    /// The state after `bytes`, or None when no match can begin with what was written.
    pub fn after(&self, mut state: StateID, bytes: &[u8]) -> Option<StateID> {
        for &b in bytes {
            state = self.dfa.next_state(state, b);
            if !self.live.contains(&state) {
                return None;
            }
        }
        Some(state)
    }

    /// What was written is a whole match.
    pub fn matches(&self, state: StateID) -> bool {
        ends_in_match(&self.dfa, state)
    }

    /// Nothing more can be written: the output is complete.
    pub fn is_final(&self, state: StateID) -> bool {
        (0..=255u8).all(|b| self.after(state, &[b]).is_none())
    }
}

fn ends_in_match(dfa: &dense::DFA<Vec<u32>>, state: StateID) -> bool {
    dfa.is_match_state(dfa.next_eoi_state(state))
}

/// The states reachable from `start` from which a whole match can still be made:
/// every reachable state, then backwards from those where the input may end.
fn live_states(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> HashSet<StateID> {
    let mut seen = HashSet::from([start]);
    let mut queue = vec![start];
    let mut into: HashMap<StateID, Vec<StateID>> = HashMap::new();
    while let Some(s) = queue.pop() {
        for b in 0..=255u8 {
            let next = dfa.next_state(s, b);
            if dfa.is_dead_state(next) || dfa.is_quit_state(next) {
                continue;
            }
            into.entry(next).or_default().push(s);
            if seen.insert(next) {
                queue.push(next);
            }
        }
    }
    let mut live: HashSet<StateID> = seen
        .iter()
        .copied()
        .filter(|&s| ends_in_match(dfa, s))
        .collect();
    let mut queue: Vec<StateID> = live.iter().copied().collect();
    while let Some(s) = queue.pop() {
        for &from in into.get(&s).into_iter().flatten() {
            if live.insert(from) {
                queue.push(from);
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(p: &Pattern, text: &str) -> Option<StateID> {
        p.after(p.start(), text.as_bytes())
    }

    #[test]
    fn whole_matches_prefixes_and_dead_ends() {
        let p = Pattern::compile(r"\d{3}-[a-z]+").unwrap();
        assert!(walk(&p, "12").is_some_and(|s| !p.matches(s)));
        assert!(walk(&p, "123-ab").is_some_and(|s| p.matches(s) && !p.is_final(s)));
        assert!(walk(&p, "12a").is_none());
        // The DFA notices a match one byte late: the byte after one is still refused.
        let p = Pattern::compile("yes|no").unwrap();
        assert!(walk(&p, "yes").is_some_and(|s| p.matches(s) && p.is_final(s)));
        assert!(walk(&p, "yes ").is_none() && walk(&p, "nope").is_none());
        // Anchored at the start: no match may begin later.
        assert!(walk(&p, "x123-a").is_none());
    }

    #[test]
    fn every_alternative_stays_open() {
        // Leftmost-first would settle on "a" and drop "ab".
        let p = Pattern::compile("a|ab").unwrap();
        let a = walk(&p, "a").unwrap();
        assert!(p.matches(a) && !p.is_final(a));
        let ab = walk(&p, "ab").unwrap();
        assert!(p.matches(ab) && p.is_final(ab));
    }

    #[test]
    fn unicode_text_goes_byte_by_byte() {
        let p = Pattern::compile("(café|naïve) ✓").unwrap();
        let s = walk(&p, "caf").unwrap();
        // Half of "é" is a live prefix; the other half completes it.
        let half = p.after(s, &"é".as_bytes()[..1]).unwrap();
        assert!(p.after(half, &"é".as_bytes()[1..]).is_some());
        assert!(walk(&p, "naïve ✓").is_some_and(|s| p.matches(s) && p.is_final(s)));
    }

    #[test]
    fn patterns_it_cannot_or_will_not_build_are_errors() {
        assert!(Pattern::compile("(unclosed").is_err());
        assert!(Pattern::compile(r"(\w)\1").is_err(), "back-references");
        assert!(Pattern::compile("(?=a)a").is_err(), "look-ahead");
        let blowup = Pattern::compile("(a|b)*a(a|b){40}");
        assert!(blowup.is_err(), "an exponential DFA must be refused");
    }
}
