//! From tokens to streamed text: incremental detokenization that never emits half a
//! UTF-8 character, and stop sequences found even when they span token boundaries.

use tokenizers::Tokenizer;

/// Decodes a growing token list into text deltas (the offsets technique of TGI).
#[derive(Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
        let prefix = decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = decode(&self.ids[self.prefix_offset..]);
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(delta) = full
                .get(prefix.len()..)
                .filter(|_| full.starts_with(&prefix))
            {
                let delta = delta.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return delta;
            }
        }
        String::new()
    }
}

/// Holds back text that could be the start of a stop sequence.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

pub enum Matched {
    /// Text safe to emit now.
    Continue(String),
    /// A stop sequence was found: emit this text (what came before it) and finish.
    Stop { before: String, stop: String },
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Matched {
        if self.stops.is_empty() {
            return Matched::Continue(text.to_string());
        }
        self.pending.push_str(text);
        if let Some((at, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
        {
            let matched = Matched::Stop {
                before: self.pending[..at].to_string(),
                stop: stop.clone(),
            };
            self.pending.clear();
            return matched;
        }
        // Keep the longest tail of `pending` that a stop sequence starts with.
        let mut keep = 0;
        for stop in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let tail = &self.pending[i..];
                if tail.len() > keep && stop.starts_with(tail) {
                    keep = tail.len();
                }
            }
        }
        let emit_to = self.pending.len() - keep;
        let emitted = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        Matched::Continue(emitted)
    }

    /// The generation ended for another reason: what was held back is output after all.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                Matched::Continue(t) => out += &t,
                Matched::Stop { before, .. } => return (out + &before, true),
            }
        }
        (out + &m.flush(), false)
    }

    #[test]
    fn stop_sequences_across_token_boundaries() {
        assert_eq!(
            run(&["\n\n"], &["Hello", "\n", "\nWorld"]),
            ("Hello".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "D more"]),
            ("abc ".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "x"]),
            ("abc ENx".into(), false)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }

    #[test]
    fn the_stop_that_matched_first_in_the_text_is_named() {
        let mut m = StopMatcher::new(vec!["b".into(), "xa".into()]);
        assert!(matches!(
            m.push("1xab"),
            Matched::Stop { before, stop } if before == "1" && stop == "xa"
        ));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert!(matches!(m.push("xS"), Matched::Continue(t) if t == "x"));
        assert!(matches!(m.push("T"), Matched::Continue(t) if t.is_empty()));
        assert!(matches!(m.push("x"), Matched::Continue(t) if t == "STx"));
    }
}
