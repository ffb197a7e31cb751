//! vLLM's `return_tokens_as_token_ids`: log probabilities name each token
//! `token_id:<id>` instead of by its text, so that tokens whose text is not whole
//! on its own (part of a multi-byte character, shown as U+FFFD) stay distinct.

use crate::host::{Event, GenerationStream, PromptToken, StopCause, TokenLogprobs};

/// The name of a token in log probabilities.
fn name(token: u32) -> String {
    format!("token_id:{token}")
}

/// Renames the tokens of generated log probabilities, alternatives included.
pub fn rename(entries: &mut [TokenLogprobs]) {
    for entry in entries {
        entry.chosen.text = name(entry.chosen.token);
        for alternative in &mut entry.top {
            alternative.text = name(alternative.token);
        }
    }
}

/// Renames a scored prompt's tokens and their alternatives.
pub fn rename_prompt(tokens: &mut [PromptToken]) {
    for token in tokens {
        token.text = name(token.token);
        for alternative in &mut token.top {
            alternative.text = name(alternative.token);
        }
    }
}

/// A generation whose chunks' log probabilities name tokens by id.
pub struct TokensAsIds {
    inner: Box<dyn GenerationStream>,
}

impl TokensAsIds {
    pub fn wrap(inner: Box<dyn GenerationStream>) -> Box<dyn GenerationStream> {
        Box::new(Self { inner })
    }
}

impl GenerationStream for TokensAsIds {
    fn next(&mut self) -> Event {
        let mut event = self.inner.next();
        if let Event::Chunk(chunk) = &mut event {
            rename(&mut chunk.logprobs);
        }
        event
    }

    fn provider(&self) -> String {
        self.inner.provider()
    }

    fn cached_prompt_tokens(&self) -> u32 {
        self.inner.cached_prompt_tokens()
    }

    fn stop_cause(&self) -> Option<StopCause> {
        self.inner.stop_cause()
    }

    fn prompt_token_ids(&self) -> Vec<u32> {
        self.inner.prompt_token_ids()
    }

    fn prompt_token_ranks(&self) -> Vec<u32> {
        self.inner.prompt_token_ranks()
    }
}
