//! Text generation: one worker thread per decoder model decodes all running
//! generations together as one batch (continuous batching: generations join and
//! leave between steps), with the KV cache kept in ORT values. ORT never runs on an
//! async worker.

mod admission;
pub mod constraint;
mod decoder_graph;
mod draft_budget;
mod kv_batch;
mod log_softmax;
mod lookup_draft;
mod prefill;
mod prefix_cache;
mod prompt_scoring;
pub mod sampler;
pub mod text;
mod worker;

pub use decoder_graph::{DecoderGraph, DecoderShape, KvLayout};
pub use sampler::SamplingParams;
pub use worker::{Generator, GeneratorLimits};

use crate::error::InferenceError;

pub struct GenerateRequest {
    /// The tenant asking: places in the decode batch are shared fairly across tenants.
    pub tenant: std::sync::Arc<str>,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: StopRules,
    /// JSON mode or a pattern: the output is one JSON object or one match, and
    /// ends with it.
    pub constraint: Option<constraint::Constraint>,
    /// Score the prompt: each of its tokens' log probability with this many
    /// alternatives, sent as [`GenEvent::Prompt`] before the first generated token.
    pub prompt_logprobs: Option<usize>,
    /// Set by the worker to the prompt tokens it took from the prefix cache, before
    /// the generation's first token.
    pub cached_prompt_tokens: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What ends a generation besides its token limit and the context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopRules {
    /// Strings that end it; they are not part of the text.
    pub strings: Vec<String>,
    /// Tokens that end it besides the model's own stop tokens; not part of the text.
    pub token_ids: Vec<u32>,
    /// The model's own stop tokens do not end it.
    pub ignore_eos: bool,
    /// Nothing but the token limit and the context ends it before this many tokens,
    /// and until then its stop tokens are not sampled.
    pub min_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Error,
}

#[derive(Debug, Clone)]
pub struct GenerationEnd {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub provider: String,
    pub error: Option<InferenceError>,
    /// Which of the request's own stops ended it (finish reason `Stop`).
    pub stop_cause: Option<StopCause>,
}

/// A stop string (as the request gave it) or one of the request's stop token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    Text(String),
    Token(u32),
}

/// A token with its log probability and its text (decoded alone).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub text: String,
    pub logprob: f32,
}

/// One generated token's log probability and the step's most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub chosen: TokenLogprob,
    pub top: Vec<TokenLogprob>,
}

/// A prompt token as the model saw it: its log probability given the tokens before
/// it (none for the first) and the most likely tokens in its place.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    pub token: u32,
    pub text: String,
    /// Where its text starts in the decoded prompt, in characters.
    pub text_offset: usize,
    pub logprob: Option<f32>,
    /// 1 + how many tokens the model found more likely in its place; 0 for the first.
    pub rank: u32,
    pub top: Vec<TokenLogprob>,
}

#[derive(Debug)]
pub enum GenEvent {
    /// The scored prompt (first, when `prompt_logprobs` was asked for).
    Prompt(Vec<PromptToken>),
    Chunk {
        text: String,
        tokens: Vec<u32>,
        /// One per token when the request asked for log probabilities.
        logprobs: Vec<TokenLogprobs>,
    },
    Done(GenerationEnd),
}
