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

    /// Sets every token that cannot come next to -inf; false when none can.
    pub fn mask(&self, logits: &mut [f32]) -> bool {
        let mut any = false;
        for (id, logit) in logits.iter_mut().enumerate() {
            if logit.is_finite() && self.allows(id as u32) {
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
