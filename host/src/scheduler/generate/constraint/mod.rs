//! Constrained decoding: the sampler only picks tokens whose bytes keep the output a
//! prefix of what the request's format allows (JSON mode: one JSON object; with a
//! JSON Schema: one object the schema accepts; with a pattern: one whole match of a
//! regular expression), and the generation ends when the output is complete.

mod json_prefix;
mod matcher;
mod numbers;
mod pattern;
mod schema;
mod string_format;
mod token_bytes;

use std::sync::Arc;

use matcher::Matcher;
pub use pattern::{Pattern, PatternError};
use regex_automata::util::primitives::StateID;
pub use schema::{Schema, SchemaError};
pub use token_bytes::TokenBytes;

/// What the output must be.
#[derive(Clone)]
pub enum Grammar {
    /// One JSON value of a schema.
    Json(Arc<Schema>),
    /// One whole match of a pattern.
    Pattern(Arc<Pattern>),
}

/// Where the output stands in its grammar.
#[derive(Clone)]
enum State {
    Json(Matcher),
    /// `ended`: a special token (the model's end) was picked where the output matched.
    Pattern {
        at: StateID,
        ended: bool,
    },
}

/// Output limited to a [`Grammar`].
#[derive(Clone)]
pub struct Constraint {
    vocab: Arc<TokenBytes>,
    grammar: Grammar,
    state: State,
}

impl Constraint {
    pub fn new(vocab: Arc<TokenBytes>, grammar: Grammar) -> Self {
        let state = match &grammar {
            Grammar::Json(schema) => State::Json(Matcher::new(schema)),
            Grammar::Pattern(p) => State::Pattern {
                at: p.start(),
                ended: false,
            },
        };
        Self {
            vocab,
            grammar,
            state,
        }
    }

    /// The state after `bytes`, if they can come next.
    fn after(&self, bytes: &[u8]) -> Option<State> {
        match (&self.state, &self.grammar) {
            (State::Json(m), Grammar::Json(schema)) => m.after(schema, bytes).map(State::Json),
            (State::Pattern { at, ended: false }, Grammar::Pattern(p)) => p
                .after(*at, bytes)
                .map(|at| State::Pattern { at, ended: false }),
            _ => None,
        }
    }

    /// A token that writes no text (the model's end, other special tokens) can come
    /// next: where a pattern's output is a whole match. A JSON value ends by itself.
    fn allows_end(&self) -> bool {
        match (&self.state, &self.grammar) {
            (State::Pattern { at, ended: false }, Grammar::Pattern(p)) => p.matches(*at),
            _ => false,
        }
    }

    /// Token `id` can come next.
    pub fn allows(&self, id: u32) -> bool {
        match self.vocab.get(id) {
            Some(bytes) => self.after(bytes).is_some(),
            None => self.allows_end(),
        }
    }

    /// Records the chosen token (one that [`Self::allows`]).
    pub fn advance(&mut self, id: u32) {
        match self.vocab.get(id) {
            Some(bytes) => {
                if let Some(next) = self.after(bytes) {
                    self.state = next;
                }
            }
            None => {
                if let State::Pattern { ended, .. } = &mut self.state {
                    *ended = true;
                }
            }
        }
    }

    /// Sets every token that cannot come next to -inf; false when none can. Tokens
    /// are first judged by their first two bytes, from a table of what the state
    /// accepts (between JSON values few bytes can come, and most of a vocabulary
    /// starts with a space and a letter); only those that pass are tried whole.
    pub fn mask(&self, logits: &mut [f32]) -> bool {
        let accepts = |bytes: &[u8]| self.after(bytes).is_some();
        let end = self.allows_end();
        let mut first = [false; 256];
        for (b, ok) in first.iter_mut().enumerate() {
            *ok = accepts(&[b as u8]);
        }
        // Inside a string nearly every byte can come: the second byte would not
        // narrow anything, and its table would cost more than it saves.
        let narrow = first.iter().filter(|ok| **ok).count() <= 32;
        let mut second = vec![[true; 256]; if narrow { 256 } else { 0 }];
        for (b0, row) in second.iter_mut().enumerate().filter(|(b0, _)| first[*b0]) {
            for (b1, ok) in row.iter_mut().enumerate() {
                *ok = accepts(&[b0 as u8, b1 as u8]);
            }
        }
        let mut any = false;
        for (id, logit) in logits.iter_mut().enumerate() {
            let allowed = logit.is_finite()
                && match self.vocab.get(id as u32) {
                    None => end,
                    Some(bytes) => {
                        let b0 = bytes[0] as usize;
                        first[b0]
                            && bytes
                                .get(1)
                                .is_none_or(|&b1| second.get(b0).is_none_or(|row| row[b1 as usize]))
                            && (bytes.len() == 1 || accepts(bytes))
                    }
                };
            if allowed {
                any = true;
            } else {
                *logit = f32::NEG_INFINITY;
            }
        }
        any
    }

    /// The output is complete: the generation ends here.
    pub fn is_complete(&self) -> bool {
        match (&self.state, &self.grammar) {
            (State::Json(m), _) => m.is_complete(),
            (State::Pattern { ended: true, .. }, _) => true,
            (State::Pattern { at, .. }, Grammar::Pattern(p)) => p.is_final(*at),
            (State::Pattern { .. }, Grammar::Json(_)) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// On the prepared chat models' real vocabularies, the mask's byte tables refuse
    /// exactly the tokens that trying each whole token refuses.
    #[test]
    fn the_mask_allows_exactly_the_tokens_that_can_come_next() {
        for (model, tokenizer) in token_bytes::prepared_tokenizers() {
            let vocab = Arc::new(TokenBytes::from_tokenizer(&tokenizer).unwrap());
            let token = |text: &[u8]| {
                (0..vocab.len() as u32)
                    .find(|&i| vocab.get(i) == Some(text))
                    .unwrap()
            };
            let person = json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 3}, "age": {"type": "integer"}}});
            for (schema, written) in [
                (Schema::any_object(), vec![&b"{"[..]]),
                (Schema::any_object(), vec![&b"{"[..], b"\""]),
                (Schema::compile(&person).unwrap(), vec![&b"{"[..]]),
                (
                    Schema::compile(&person).unwrap(),
                    vec![&b"{"[..], b"\"", b"name", b"\":", b" \""],
                ),
            ] {
                let mut c = Constraint::new(vocab.clone(), Grammar::Json(Arc::new(schema)));
                for text in &written {
                    c.advance(token(text));
                }
                let mut logits = vec![0.0f32; vocab.len()];
                let started = std::time::Instant::now();
                assert!(c.mask(&mut logits));
                let took = started.elapsed();
                let masked: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
                let whole: Vec<bool> = (0..vocab.len() as u32).map(|i| c.allows(i)).collect();
                let allowed = masked.iter().filter(|a| **a).count();
                eprintln!("{model} after {written:?}: {allowed} tokens allowed, mask {took:?}");
                assert!(masked == whole, "{model} after {written:?}");
            }
        }
    }

    /// The same for patterns; tokens that write no text (the model's end) are allowed
    /// exactly where the output is a whole match.
    #[test]
    fn pattern_masks_allow_the_tokens_that_continue_a_match() {
        for (model, tokenizer) in token_bytes::prepared_tokenizers() {
            let vocab = Arc::new(TokenBytes::from_tokenizer(&tokenizer).unwrap());
            let special = (0..vocab.len() as u32)
                .find(|&i| vocab.get(i).is_none())
                .unwrap();
            let pattern = Arc::new(Pattern::compile(r"(Paris|Lyon|\d{1,3})\.?").unwrap());
            let mut c = Constraint::new(vocab.clone(), Grammar::Pattern(pattern));
            for step in 0..3 {
                let mut logits = vec![0.0f32; vocab.len()];
                assert!(c.mask(&mut logits));
                let masked: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
                let whole: Vec<bool> = (0..vocab.len() as u32).map(|i| c.allows(i)).collect();
                assert!(masked == whole, "{model} at step {step}");
                let allowed: Vec<u32> = (0..vocab.len() as u32)
                    .filter(|&i| whole[i as usize])
                    .collect();
                // Every allowed token with text continues the pattern: pick one of them.
                let next = match step {
                    0 => allowed
                        .iter()
                        .copied()
                        .find(|&i| {
                            vocab.get(i) == Some(b"Par".as_slice())
                                || vocab.get(i) == Some(b"P".as_slice())
                        })
                        .unwrap(),
                    _ => allowed
                        .iter()
                        .copied()
                        .find(|&i| vocab.get(i).is_some())
                        .unwrap_or(special),
                };
                assert_eq!(
                    c.allows(special),
                    step > 0 && c.allows_end(),
                    "{model} at step {step}"
                );
                c.advance(next);
            }
            eprintln!("{model}: ok");
        }
        let vocab = Arc::new(TokenBytes::from_tokens([
            Some(b"ye".to_vec()),
            Some(b"s".to_vec()),
            Some(b"no".to_vec()),
            None,
        ]));
        let mut c = Constraint::new(
            vocab,
            Grammar::Pattern(Arc::new(Pattern::compile("yes|no").unwrap())),
        );
        assert!(!c.allows(3) && !c.allows(1) && c.allows(0) && c.allows(2));
        c.advance(0);
        assert!(c.allows(1) && !c.allows(3) && !c.is_complete());
        c.advance(1);
        // "yes": nothing more can be written, so the output is complete.
        assert!(c.is_complete() && c.allows(3));
    }
}
