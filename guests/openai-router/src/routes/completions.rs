//! `POST /v1/completions` (OpenAI's legacy text completions): a raw prompt, no
//! chat template, for base and chat models alike. Text prompts are tokenized by
//! the host with the model's special tokens (BOS); token-id prompts go as they
//! are. The sampling fields are [`super::sampling`]'s, the response
//! [`super::generate`]'s. As at OpenAI, `max_tokens` defaults to 16 here.

use super::embeddings::token_id;
use super::generate::{self, Flavor};
use super::json::{parse_object, unsupported, unsupported_value, wrong_type, Fields};
use super::sampling::{self, Endpoint, Sampling};
use crate::errors::ApiError;
use crate::host::{Host, ModelKind, Prompt};
use crate::http::Reply;
use serde_json::Value;

const EXAMPLE: &str = r#"{"model": "...", "prompt": "Once upon a time"}"#;

#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
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
    generate::run(host, Flavor::Text, &info, req.prompt, &req.sampling, true)
}

pub fn parse_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let model = f.required_string("model")?;
    let prompt = match f.take("prompt") {
        None => {
            return Err(ApiError::invalid(
                "prompt",
                "Missing required parameter: 'prompt'.",
            ))
        }
        Some(v) => parse_prompt(v)?,
    };
    let sampling = sampling::parse(&mut f, Endpoint::Completions)?;

    match f.take("echo") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Err(unsupported("echo", "'echo' is not supported.")),
        Some(other) => return Err(wrong_type("echo", "a boolean", &other)),
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
    match f.integer("best_of", 1, i128::from(u64::MAX))? {
        None | Some(1) => {}
        Some(n) => {
            return Err(unsupported_value(
                "best_of",
                format!("'best_of' is {n}; only 1 is supported."),
            ))
        }
    }
    f.reject_unless("logprobs", |_| false, "is not supported.")?;
    f.finish()?;
    Ok(CompletionRequest {
        model,
        prompt,
        sampling,
    })
}

const PROMPT_SHAPES: &str =
    "a string, an array of one string, an array of token ids, or an array of one token-id array";

/// `prompt`: one text or one token sequence, in any of OpenAI's spellings.
pub fn parse_prompt(v: Value) -> Result<Prompt, ApiError> {
    let invalid = |msg: String| ApiError::invalid("prompt", msg);
    let items = match v {
        Value::String(s) => return Ok(Prompt::Text(s)),
        Value::Array(items) => items,
        other => {
            return Err(invalid(format!(
                "Invalid type for 'prompt': expected {PROMPT_SHAPES}, but got {} instead.",
                crate::routes::json::type_name(&other)
            )))
        }
    };
    let several = |n: usize| {
        unsupported_value(
            "prompt",
            format!("'prompt' holds {n} prompts; this server completes one prompt per request."),
        )
    };
    match items.first() {
        None => Err(invalid("'prompt' cannot be an empty array.".into())),
        Some(Value::String(_)) | Some(Value::Array(_)) if items.len() > 1 => {
            Err(several(items.len()))
        }
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(seq)) => {
            if seq.is_empty() {
                return Err(invalid("'prompt[0]' cannot be an empty array.".into()));
            }
            let tokens = seq
                .iter()
                .enumerate()
                .map(|(j, t)| token_id(t, "prompt", &format!("prompt[0][{j}]")))
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(Prompt::Tokens(tokens))
        }
        Some(Value::Number(_)) => {
            let tokens = items
                .iter()
                .enumerate()
                .map(|(i, t)| token_id(t, "prompt", &format!("prompt[{i}]")))
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(Prompt::Tokens(tokens))
        }
        Some(other) => Err(invalid(format!(
            "Invalid type for 'prompt[0]': expected a string, a token id or an array of token \
             ids, but got {} instead. 'prompt' must be {PROMPT_SHAPES}.",
            crate::routes::json::type_name(other)
        ))),
    }
}
