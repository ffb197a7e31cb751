//! Text generation: one worker thread per decoder model runs prefill and decode
//! steps with a KV cache, interleaving all active generations step by step so that
//! several streams make progress together. ORT never runs on an async worker.

mod decoder_graph;
pub mod sampler;
pub mod text;
mod worker;

pub use decoder_graph::{DecoderGraph, DecoderShape};
pub use sampler::SamplingParams;
pub use worker::Generator;

use crate::error::InferenceError;

pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
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
}

#[derive(Debug)]
pub enum GenEvent {
    Chunk { text: String, tokens: Vec<u32> },
    Done(GenerationEnd),
}
