//! Constrained decoding: the sampler only picks tokens whose bytes keep the output a
//! prefix of what the request's format allows (JSON mode: one JSON object; with a
//! JSON Schema: one object the schema accepts), and the generation ends when the
//! output is complete.

mod json_prefix;
mod matcher;
mod schema;
mod token_bytes;

use std::sync::Arc;

use matcher::Matcher;
pub use schema::{Schema, SchemaError};
pub use token_bytes::TokenBytes;

/// Output limited to one JSON value of a schema.
#[derive(Clone)]
pub struct JsonConstraint {
    vocab: Arc<TokenBytes>,
    schema: Arc<Schema>,
    state: Matcher,
}

impl JsonConstraint {
    pub fn new(vocab: Arc<TokenBytes>, schema: Arc<Schema>) -> Self {
        Self {
            state: Matcher::new(&schema),
            vocab,
            schema,
        }
    }

    /// Token `id` can come next.
    pub fn allows(&self, id: u32) -> bool {
        self.vocab
            .get(id)
            .is_some_and(|bytes| self.state.after(&self.schema, bytes).is_some())
    }

    /// Records the chosen token (one that [`Self::allows`]).
    pub fn advance(&mut self, id: u32) {
        if let Some(next) = self
            .vocab
            .get(id)
            .and_then(|b| self.state.after(&self.schema, b))
        {
            self.state = next;
        }
    }

    /// Sets every token that cannot come next to -inf; false when none can. Tokens
    /// are first judged by their first two bytes, from a table of what the state
    /// accepts (between JSON values few bytes can come, and most of a vocabulary
    /// starts with a space and a letter); only those that pass are tried whole.
    pub fn mask(&self, logits: &mut [f32]) -> bool {
        let accepts = |bytes: &[u8]| self.state.after(&self.schema, bytes).is_some();
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
                && self.vocab.get(id as u32).is_some_and(|bytes| {
                    let b0 = bytes[0] as usize;
                    first[b0]
                        && bytes
                            .get(1)
                            .is_none_or(|&b1| second.get(b0).is_none_or(|row| row[b1 as usize]))
                        && (bytes.len() == 1 || accepts(bytes))
                });
            if allowed {
                any = true;
            } else {
                *logit = f32::NEG_INFINITY;
            }
        }
        any
    }

    /// The value is complete: the generation ends here.
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
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
                let mut c = JsonConstraint::new(vocab.clone(), Arc::new(schema));
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
}
