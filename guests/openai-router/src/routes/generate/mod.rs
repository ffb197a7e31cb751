//! What chat and text completions share once the prompt is ready: start the
//! host's generation, then either collect it into one JSON response or stream
//! it as server-sent events ([`sse`]).
//!
//! Finish reasons: the host's `stop` and `length` pass through; `cancelled` (the
//! request's deadline passed; a client never sees its own disconnect) becomes
//! `"length"`: the text is cut short by a budget, as with `max_tokens`, and the
//! partial text is returned. `error` becomes a 500-class OpenAI error (a JSON
//! error response, or an SSE `error` event when streaming).

pub mod best_of;
mod collect;
pub mod logprobs;
pub mod sse;
pub mod stop_text;
pub mod tokens_as_ids;

pub use collect::{collect, drain, Drained};
pub(crate) use collect::{TextChoice, TextCompletion};

use crate::routes::chat::repeats::StopRepeats;
use crate::routes::truncation::{self, Truncation, TruncationError};

use super::sampling::{Sampling, MAX_CHOICES};
use crate::errors::ApiError;
use crate::host::{
    ErrorCode, FinishReason, GenerationEnd, GenerationStream, Host, HostError, ModelInfo, Prompt,
    PromptToken, StopCause, TokenLogprobs, Usage,
};
use crate::http::Reply;
use serde::Serialize;
use std::rc::Rc;

/// Which OpenAI object family the output takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `chat.completion` / `chat.completion.chunk`, ids `chatcmpl-…`.
    Chat,
    /// `text_completion`, ids `cmpl-…`.
    Text,
}

impl Flavor {
    /// The request field that holds the prompt (context-length errors point at it).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Flavor::Chat => "messages",
            Flavor::Text => "prompt",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Flavor::Chat => "chatcmpl-",
            Flavor::Text => "cmpl-",
        }
    }
}

/// What every object of one response repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// One choice of the response: its generation and its place in `choices`.
pub struct Choice {
    pub index: u32,
    /// Choice 0 of each prompt counts that prompt's tokens in `usage` (OpenAI
    /// counts a prompt once however many choices it has).
    pub counts_prompt: bool,
    pub stream: Box<dyn GenerationStream>,
    /// Completions' `echo`: the prompt the choice's text starts with.
    pub echo: Option<EchoedPrompt>,
    /// vLLM's fields about the choice's prompt (shared by the prompt's choices).
    pub prompt: Rc<PromptExtras>,
}

/// What a response tells of a prompt beyond OpenAI's fields (vLLM's).
#[derive(Debug, Default)]
pub struct PromptExtras {
    /// `return_token_ids`: the prompt's token ids.
    pub token_ids: Option<Vec<u32>>,
    /// `prompt_logprobs`, in vLLM's shape.
    pub logprobs: Option<serde_json::Value>,
    /// The prompt's length in tokens, when known from the start (continuous usage).
    pub tokens: u32,
}

/// What a response shows beside the text, from the request's fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub logprobs: bool,
    /// Answers are read as tool calls (`tools`).
    pub tool_calls: bool,
    /// vLLM's `return_token_ids`: each choice's token ids (and the prompt's).
    pub token_ids: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// vLLM's `stream_options.continuous_usage_stats`: every chunk's usage so far.
    pub continuous_usage: bool,
}

/// A prompt repeated at the start of its choices (`echo`).
#[derive(Clone)]
pub struct EchoedPrompt {
    pub text: String,
    /// Its tokens scored by the model (with `logprobs`; else empty).
    pub tokens: Vec<PromptToken>,
}

impl EchoedPrompt {
    /// The prompt's part of completions' `logprobs`.
    fn logprobs(&self, generated: &[TokenLogprobs]) -> serde_json::Value {
        logprobs::completions_echoed(&self.tokens, generated, self.text.chars().count())
    }
}

/// Starts a generation for each choice (`sampling.n` per prompt, in OpenAI's
/// order: prompt by prompt) and shapes their output (with `tool_calls`, chat
/// answers are read as [`tools`](crate::routes::chat::tools) answers). The host decodes them
/// together (continuous batching), so `n` choices cost far less than `n`
/// requests one after another. Errors before anything is sent (too many tokens,
/// host refusal) are ordinary error responses; choices already started are then
/// dropped, which cancels them.
pub fn run(
    host: &dyn Host,
    flavor: Flavor,
    info: &ModelInfo,
    prompts: Vec<Prompt>,
    sampling: &Sampling,
    add_special_tokens: bool,
    tool_calls: bool,
) -> Result<Reply, ApiError> {
    if let Some(max) = sampling.max_tokens {
        if info.context_length != 0 && max >= info.context_length {
            let param = sampling.max_tokens_param;
            return Err(ApiError::invalid(
                param,
                format!(
                    "'{param}' is {max}, but model '{}' has a context length of {} tokens, \
                     which must hold the prompt as well; use a smaller value.",
                    info.id, info.context_length
                ),
            )
            .code("context_length_exceeded"));
        }
    }
    // `best_of` candidates are generations too; they count against the same limit.
    let (per_prompt, param, what) = match sampling.best_of {
        b if b > sampling.n => (b, "best_of", "candidates"),
        _ => (sampling.n, "n", "choices"),
    };
    let total = prompts.len() as u64 * u64::from(per_prompt);
    if total > u64::from(MAX_CHOICES) {
        return Err(ApiError::invalid(
            param,
            format!(
                "{} prompts × '{param}' {per_prompt} = {total} {what}; this server generates \
                 at most {MAX_CHOICES} per request.",
                prompts.len(),
            ),
        ));
    }
    let prompts = match sampling.truncation {
        Some(truncation) => truncate_prompts(
            host,
            flavor,
            info,
            prompts,
            sampling,
            truncation,
            add_special_tokens,
        )?,
        None => prompts,
    };
    let best_of = (per_prompt > sampling.n).then_some(best_of::BestOf {
        candidates: per_prompt as usize,
        keep: sampling.n as usize,
    });
    let mut choices = Vec::with_capacity(total as usize);
    for (p, prompt) in prompts.iter().enumerate() {
        let failed = |e| {
            let mut out = host_error(e, flavor, prompts.len() > 1, p);
            out.param = sampling.error_param(out.param.take());
            out
        };
        let mut echo = match (sampling.echo, prompt) {
            (false, _) => None,
            (true, Prompt::Text(text)) => Some(text.clone()),
            // Ids the tokenizer does not know are the prompt's fault.
            (true, Prompt::Tokens(ids)) => Some(host.decode(&info.id, ids).map_err(|e| {
                let mut e = failed(e);
                e.param = Some(flavor.prompt_param().to_string());
                e
            })?),
        }
        .map(|text| EchoedPrompt {
            text,
            tokens: Vec::new(),
        });
        let extras = sampling.extras();
        let mut shared = Rc::new(PromptExtras::default());
        for j in 0..per_prompt {
            let mut options = sampling.options(add_special_tokens, j);
            if best_of.is_some() {
                // Candidates are ranked by their tokens' log probabilities.
                options.logprobs.get_or_insert(0);
            }
            // The prompt is scored once, with its first choice.
            let mut prompt_extras = PromptExtras::default();
            let stream = match sampling.prompt_scoring() {
                Some(top) if j == 0 => {
                    let (mut tokens, stream) = host
                        .generate_scored(&info.id, prompt, &options, &extras, top)
                        .map_err(failed)?;
                    if sampling.tokens_as_ids {
                        tokens_as_ids::rename_prompt(&mut tokens);
                    }
                    if let Some(k) = sampling.prompt_logprobs {
                        let ranks = stream.prompt_token_ranks();
                        prompt_extras.logprobs = Some(logprobs::prompt_vllm(&tokens, &ranks, k));
                    }
                    if let (Some(echo), Some(k)) = (&mut echo, sampling.logprobs) {
                        for t in &mut tokens {
                            t.top.truncate(k as usize);
                        }
                        echo.tokens = tokens;
                    }
                    stream
                }
                _ => host
                    .generate(&info.id, prompt, &options, &extras)
                    .map_err(failed)?,
            };
            if j == 0 {
                if sampling.return_token_ids || sampling.continuous_usage {
                    let ids = stream.prompt_token_ids();
                    prompt_extras.tokens = ids.len() as u32;
                    prompt_extras.token_ids = sampling.return_token_ids.then_some(ids);
                }
                shared = Rc::new(prompt_extras);
            }
            let stream = if tool_calls {
                StopRepeats::wrap(stream)
            } else if sampling.include_stop_str {
                stop_text::IncludeStopText::wrap(stream)
            } else {
                stream
            };
            let stream = if sampling.tokens_as_ids {
                tokens_as_ids::TokensAsIds::wrap(stream)
            } else {
                stream
            };
            choices.push(Choice {
                index: choices.len() as u32,
                counts_prompt: j == 0,
                stream,
                echo: echo.clone(),
                prompt: Rc::clone(&shared),
            });
        }
    }
    let meta = Meta {
        id: match &sampling.request_id {
            Some(id) => format!("{}{id}", flavor.id_prefix()),
            None => new_id(flavor.id_prefix(), host),
        },
        created: host.unix_time(),
        model: info.id.clone(),
    };
    let shape = Shape {
        logprobs: sampling.logprobs.is_some(),
        tool_calls,
        token_ids: sampling.return_token_ids,
        include_usage: sampling.include_usage,
        continuous_usage: sampling.continuous_usage,
    };
    if sampling.stream {
        Ok(Reply::Stream(sse::response(flavor, meta, choices, shape)))
    } else {
        collect(flavor, &meta, choices, shape, best_of).map(Reply::Full)
    }
}

/// `truncate_prompt_tokens`: each prompt longer than the limit becomes its last
/// tokens (a text prompt is tokenized here, with the special tokens the request's
/// form adds, so the host takes the ids as they are). `-1` keeps what the context
/// holds beside `max_tokens`, or beside a quarter of the context when no
/// `max_tokens` is set (the answer would otherwise have no room).
fn truncate_prompts(
    host: &dyn Host,
    flavor: Flavor,
    info: &ModelInfo,
    prompts: Vec<Prompt>,
    sampling: &Sampling,
    truncation: Truncation,
    add_special_tokens: bool,
) -> Result<Vec<Prompt>, ApiError> {
    let room = truncation::room_for_prompt(info, sampling.max_tokens);
    let limit = match truncation {
        Truncation::ToContext => room,
        Truncation::Last(k) => k.min(room),
    };
    let several = prompts.len() > 1;
    prompts
        .into_iter()
        .enumerate()
        .map(|(p, prompt)| {
            let failed = |e: TruncationError| {
                e.into_api(|e| {
                    let mut out = host_error(e, flavor, several, p);
                    out.param = Some(flavor.prompt_param().to_string());
                    out
                })
            };
            Ok(match prompt {
                Prompt::Text(text) => {
                    match truncation::tokens_of_text(
                        host,
                        &info.id,
                        &text,
                        add_special_tokens,
                        limit,
                    )
                    .map_err(failed)?
                    {
                        Some(cut) => Prompt::Tokens(cut),
                        None => Prompt::Text(text),
                    }
                }
                Prompt::Tokens(ids) if ids.len() > limit as usize => {
                    Prompt::Tokens(truncation::tokens_of_ids(&ids, 0, limit).map_err(failed)?)
                }
                tokens => tokens,
            })
        })
        .collect()
}

/// A host error from `generate`: context-length errors point at the route's
/// prompt field (the host only knows "prompt"; of several prompts, the one that
/// failed), not-found at `model`.
pub fn host_error(e: HostError, flavor: Flavor, several: bool, prompt: usize) -> ApiError {
    let code = e.code;
    let mut out = ApiError::from(e);
    match code {
        ErrorCode::ContextLengthExceeded
            if matches!(out.param.as_deref(), None | Some("prompt" | "input")) =>
        {
            out.param = Some(if several {
                format!("{}[{prompt}]", flavor.prompt_param())
            } else {
                flavor.prompt_param().to_string()
            });
        }
        ErrorCode::NotFound if out.param.is_none() => out.param = Some("model".to_string()),
        _ => {}
    }
    out
}

/// `chatcmpl-` / `cmpl-` plus 24 random base-62 characters.
pub fn new_id(prefix: &str, host: &dyn Host) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    let mut bits = 0u64;
    for i in 0..24 {
        // 62^10 < 2^64: ten characters per draw.
        if i % 10 == 0 {
            bits = host.random_u64();
        }
        id.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    id
}

/// vLLM's `stop_reason` of an ended stream: the stop string or the stop token id
/// (None, and so absent, when the model's own stop token or a limit ended it).
pub fn stop_reason(stream: &dyn GenerationStream) -> Option<serde_json::Value> {
    stream.stop_cause().map(|cause| match cause {
        StopCause::Text(text) => serde_json::Value::String(text),
        StopCause::Token(token) => serde_json::Value::from(token),
    })
}

/// The OpenAI finish reason, or the error a failed generation becomes.
pub fn finish_reason(end: &GenerationEnd) -> Result<&'static str, ApiError> {
    match end.finish_reason {
        FinishReason::Stop => Ok("stop"),
        FinishReason::Length | FinishReason::Cancelled => Ok("length"),
        FinishReason::Error => Err(match &end.error {
            Some(e) => ApiError::from(e.clone()),
            None => ApiError::server("The generation failed; the host gave no reason."),
        }),
    }
}

/// OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UsageJson {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Of the prompt tokens, those the host's prefix cache held (OpenAI's prompt caching).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl UsageJson {
    /// Adds one choice's usage (`cached` of its prompt tokens came from the host's
    /// prefix cache); its prompt only if `counts_prompt`.
    pub fn add(&mut self, u: Usage, cached: u32, counts_prompt: bool) {
        if counts_prompt {
            self.prompt_tokens += u.prompt_tokens;
            self.total_tokens += u64::from(u.prompt_tokens);
            self.prompt_tokens_details.cached_tokens += cached.min(u.prompt_tokens);
        }
        self.completion_tokens += u.completion_tokens;
        self.total_tokens += u64::from(u.completion_tokens);
    }
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> Self {
        UsageJson {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u64::from(u.prompt_tokens) + u64::from(u.completion_tokens),
            prompt_tokens_details: PromptTokensDetails::default(),
        }
    }
}
