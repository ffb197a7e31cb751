//! The seam between the routes and the nnhost imports: routes talk to a [`Host`],
//! the component passes [`WitHost`] (the real imports), tests pass a fake.

use crate::bindings::nnhost::inference::{embeddings, generation, models, store, tokenizer, types};
use std::rc::Rc;

pub use embeddings::{EmbedInput, EmbedOptions, EmbeddingBatch};
pub use generation::{
    Chunk, Event, FinishReason, GenerateOptions, GenerationEnd, Logprob, OutputFormat, Prompt,
    PromptToken, SamplingExtras, StopCause, TokenLogprobs, Usage,
};
pub use models::{ModelInfo, ModelKind};
pub use types::{Error as HostError, ErrorCode};

/// A running generation (WIT `generation-stream`). `next` waits for the next chunk;
/// after `Event::Done` it keeps returning `Done`. Dropping it cancels the generation.
pub trait GenerationStream {
    fn next(&mut self) -> Event;
    /// The provider running the generation, e.g. `cpu-x86_64`.
    fn provider(&self) -> String;
    /// Prompt tokens the host read from its prefix cache (known once the first chunk
    /// or the end has come).
    fn cached_prompt_tokens(&self) -> u32 {
        0
    }
    /// The request's stop string or stop token id that ended the generation (known
    /// once `next` has returned `Done`).
    fn stop_cause(&self) -> Option<StopCause> {
        None
    }
    /// The prompt's token ids as the model reads them (known from the start).
    fn prompt_token_ids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Of a stream from [`Host::generate_scored`]: each prompt token's rank in the
    /// model's distribution at its place (1 = the most likely; 0 for the first token).
    fn prompt_token_ranks(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// The tenant's key-value store on the host, kept between requests (stored
/// responses). Shared (`Rc`) so that a streamed body can write when it ends.
pub trait KeyValue {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// Whether there was a value.
    fn delete(&self, key: &str) -> bool;
    /// The keys starting with `prefix`, in the order they were first set.
    fn keys(&self, prefix: &str) -> Vec<String>;
    /// The value and its version (changed by every write).
    fn get_versioned(&self, key: &str) -> Option<(u64, Vec<u8>)>;
    /// `set` if `key` is still at `version` (`None`: absent); false if another
    /// request wrote or deleted it first.
    fn set_if(&self, key: &str, version: Option<u64>, value: &[u8]) -> Result<bool, HostError>;
}

/// A stored value read as JSON (`None`: absent, or not of this shape).
pub fn get_json<T: serde::de::DeserializeOwned>(store: &dyn KeyValue, key: &str) -> Option<T> {
    store
        .get(key)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Stores `value` as JSON.
pub fn set_json<T: serde::Serialize>(
    store: &dyn KeyValue,
    key: &str,
    value: &T,
) -> Result<(), HostError> {
    store.set(key, &serde_json::to_vec(value).unwrap_or_default())
}

/// What the routes need from the host.
pub trait Host {
    /// The tenant's key-value store.
    fn store(&self) -> Rc<dyn KeyValue>;
    fn list_models(&self) -> Vec<ModelInfo>;
    fn get_model(&self, id: &str) -> Option<ModelInfo>;
    fn embed(
        &self,
        model: &str,
        input: &EmbedInput,
        options: EmbedOptions,
    ) -> Result<EmbeddingBatch, HostError>;
    /// Checks the request (model, prompt plus max-tokens within the context) and
    /// starts generating.
    fn generate(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        extras: &SamplingExtras,
    ) -> Result<Box<dyn GenerationStream>, HostError>;
    /// `generate`, with the prompt scored first: each prompt token and its log
    /// probability given the ones before it, with `top` alternatives.
    fn generate_scored(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        extras: &SamplingExtras,
        top: u32,
    ) -> Result<(Vec<PromptToken>, Box<dyn GenerationStream>), HostError>;
    /// The text of token ids, special tokens included.
    fn decode(&self, model: &str, tokens: &[u32]) -> Result<String, HostError>;
    /// The token ids of a text.
    fn encode(&self, model: &str, text: &str, add_special: bool) -> Result<Vec<u32>, HostError>;
    /// Unix seconds now (`created` of completion objects).
    fn unix_time(&self) -> u64;
    /// Random bits for response ids.
    fn random_u64(&self) -> u64;
}

/// The real host, through the component's `nnhost:inference` imports (and the
/// wasi clock and random imports for [`Host::unix_time`] / [`Host::random_u64`]).
pub struct WitHost;

/// The `store` import.
struct WitStore;

impl KeyValue for WitStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        store::get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        store::set(key, value)
    }

    fn delete(&self, key: &str) -> bool {
        store::delete(key)
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        store::keys(prefix)
    }

    fn get_versioned(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        store::get_versioned(key).map(|v| (v.version, v.value))
    }

    fn set_if(&self, key: &str, version: Option<u64>, value: &[u8]) -> Result<bool, HostError> {
        store::set_if(key, version, value)
    }
}

impl GenerationStream for generation::GenerationStream {
    fn next(&mut self) -> Event {
        generation::GenerationStream::next(self)
    }

    fn provider(&self) -> String {
        generation::GenerationStream::provider(self)
    }

    fn cached_prompt_tokens(&self) -> u32 {
        generation::GenerationStream::cached_prompt_tokens(self)
    }

    fn stop_cause(&self) -> Option<StopCause> {
        generation::GenerationStream::stop_cause(self)
    }

    fn prompt_token_ids(&self) -> Vec<u32> {
        generation::GenerationStream::prompt_token_ids(self)
    }

    fn prompt_token_ranks(&self) -> Vec<u32> {
        generation::GenerationStream::prompt_token_ranks(self)
    }
}

impl Host for WitHost {
    fn store(&self) -> Rc<dyn KeyValue> {
        Rc::new(WitStore)
    }

    fn list_models(&self) -> Vec<ModelInfo> {
        models::list_models()
    }

    fn get_model(&self, id: &str) -> Option<ModelInfo> {
        models::get_model(id)
    }

    fn embed(
        &self,
        model: &str,
        input: &EmbedInput,
        options: EmbedOptions,
    ) -> Result<EmbeddingBatch, HostError> {
        embeddings::embed(model, input, options)
    }

    fn generate(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        extras: &SamplingExtras,
    ) -> Result<Box<dyn GenerationStream>, HostError> {
        let stream = generation::generate_with_extras(model, prompt, options, extras)?;
        Ok(Box::new(stream))
    }

    fn generate_scored(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        extras: &SamplingExtras,
        top: u32,
    ) -> Result<(Vec<PromptToken>, Box<dyn GenerationStream>), HostError> {
        let scored = generation::generate_scored_with_extras(model, prompt, options, extras, top)?;
        Ok((scored.prompt, Box::new(scored.generation)))
    }

    fn decode(&self, model: &str, tokens: &[u32]) -> Result<String, HostError> {
        tokenizer::decode(model, tokens, false)
    }

    fn encode(&self, model: &str, text: &str, add_special: bool) -> Result<Vec<u32>, HostError> {
        tokenizer::encode(model, text, add_special)
    }

    fn unix_time(&self) -> u64 {
        wasip2::clocks::wall_clock::now().seconds
    }

    fn random_u64(&self) -> u64 {
        wasip2::random::random::get_random_u64()
    }
}
