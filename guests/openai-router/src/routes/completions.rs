//! `POST /v1/completions` (OpenAI's legacy text completions): a raw prompt, no
//! chat template, for base and chat models alike. Text prompts are tokenized by
//! the host with the model's special tokens (BOS); token-id prompts go as they
//! are. The sampling fields are [`super::sampling`]'s, the response
//! [`super::generate`]'s. As at OpenAI, `max_tokens` defaults to 16 here.
//! `echo` starts each choice's text with its prompt; with `logprobs` the host scores
//! the prompt too (each prompt token's log probability given the ones before it,
//! the first one's `null`), and `max_tokens: 0` then asks for the score alone:
//! what evaluation harnesses send for a text's log-likelihood. `best_of` returns the
//! `n` most likely of that many candidates ([`super::generate::best_of`]).

use super::embeddings::token_id;
use super::generate::{self, Flavor};
use super::json::{parse_object, unsupported, wrong_type, Fields};
use super::sampling::{self, Endpoint, Sampling, MAX_CHOICES};
use crate::errors::ApiError;
use crate::host::{Host, ModelKind, Prompt};
use crate::http::Reply;
use serde_json::Value;

const EXAMPLE: &str = r#"{"model": "...", "prompt": "Once upon a time"}"#;

#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub model: String,
    /// One or more prompts; each gets `n` choices.
    pub prompts: Vec<Prompt>,
    pub sampling: Sampling,
}

pub fn handle(host: &dyn Host, body: &[u8]) -> Result<Reply, ApiError> {
    let req = parse_request(body)?;
    let info = host
        .get_model(&req.model)
        .ok_or_else(|| ApiError::model_not_found(&req.model))?;
    if !matches!(info.kind, ModelKind::Chat | ModelKind::Completion) {
        return Err(ApiError::invalid(
            "model",
            format!(
                "The model '{}' is not a text generation model (kind: {}); it cannot be used \
                 with /v1/completions.",
                info.id,
                crate::routes::models::kind_name(info.kind)
            ),
        ));
    }
    generate::run(
        host,
        Flavor::Text,
        &info,
        req.prompts,
        &req.sampling,
        true,
        false,
    )
}

pub fn parse_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let model = f.required_string("model")?;
    let prompts = match f.take("prompt") {
        None => {
            return Err(ApiError::invalid(
                "prompt",
                "Missing required parameter: 'prompt'.",
            ))
        }
        Some(v) => parse_prompts(v)?,
    };
    let mut sampling = sampling::parse(&mut f, Endpoint::Completions)?;

    sampling.echo = f.bool("echo")?.unwrap_or(false);
    if sampling.max_tokens == Some(0) && !sampling.echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "'max_tokens' is 0: that generates nothing; use at least 1, or 0 with 'echo': true \
             to score the prompt.",
        ));
    }
    match f.take("suffix") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(_)) => {
            return Err(unsupported(
                "suffix",
                "'suffix' (insertion) is not supported.",
            ))
        }
        Some(other) => return Err(wrong_type("suffix", "a string", &other)),
    }
    if let Some(best_of) = f.integer("best_of", 1, i128::from(MAX_CHOICES))? {
        let best_of = best_of as u32;
        if best_of < sampling.n {
            return Err(ApiError::invalid(
                "best_of",
                format!(
                    "'best_of' ({best_of}) must be at least 'n' ({}): it is how many \
                     candidates the {} returned choices are picked from.",
                    sampling.n, sampling.n
                ),
            ));
        }
        if best_of > sampling.n && sampling.stream {
            return Err(ApiError::invalid(
                "best_of",
                "'best_of' cannot be used with 'stream': the best candidates are known only \
                 once all have finished.",
            ));
        }
        sampling.best_of = best_of;
    }
    f.finish()?;
    Ok(CompletionRequest {
        model,
        prompts,
        sampling,
    })
}

const PROMPT_SHAPES: &str =
    "a string, an array of strings, an array of token ids, or an array of token-id arrays";

/// `prompt`: one or more texts or token sequences, in any of OpenAI's spellings.
pub fn parse_prompts(v: Value) -> Result<Vec<Prompt>, ApiError> {
    let invalid = |msg: String| ApiError::invalid("prompt", msg);
    let items = match v {
        Value::String(s) => return Ok(vec![Prompt::Text(s)]),
        Value::Array(items) => items,
        other => {
            return Err(invalid(format!(
                "Invalid type for 'prompt': expected {PROMPT_SHAPES}, but got {} instead.",
                crate::routes::json::type_name(&other)
            )))
        }
    };
    if items.is_empty() {
        return Err(invalid("'prompt' cannot be an empty array.".into()));
    }
    if items[0].is_number() {
        let tokens = items
            .iter()
            .enumerate()
            .map(|(i, t)| token_id(t, "prompt", &format!("prompt[{i}]")))
            .collect::<Result<Vec<u32>, _>>()?;
        return Ok(vec![Prompt::Tokens(tokens)]);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(Prompt::Text(s)),
            Value::Array(seq) if seq.is_empty() => {
                Err(invalid(format!("'prompt[{i}]' cannot be an empty array.")))
            }
            Value::Array(seq) => seq
                .iter()
                .enumerate()
                .map(|(j, t)| token_id(t, "prompt", &format!("prompt[{i}][{j}]")))
                .collect::<Result<Vec<u32>, _>>()
                .map(Prompt::Tokens),
            other => Err(invalid(format!(
                "Invalid type for 'prompt[{i}]': expected a string or an array of token ids, \
                 but got {} instead. 'prompt' must be {PROMPT_SHAPES}.",
                crate::routes::json::type_name(&other)
            ))),
        })
        .collect()
}
