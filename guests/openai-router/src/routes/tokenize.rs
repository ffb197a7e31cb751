//! `POST /tokenize` and `POST /detokenize` (vLLM's shapes; also under `/v1`, where
//! the default config routes requests to this guest): a text, or a chat
//! conversation rendered with the model's chat template exactly as
//! `/v1/chat/completions` renders it, as the model's token ids; and token ids back
//! as text. What clients need to count tokens against `max_model_len` before they
//! send a request.

use super::chat::{
    request::{parse_messages, parse_render_options},
    template,
};
use super::completions::parse_prompts;
use super::json::{parse_object, Fields};
use crate::errors::ApiError;
use crate::host::{Host, ModelInfo, ModelKind, Prompt};
use crate::http::Response;
use serde_json::json;

const EXAMPLE: &str = r#"{"model": "...", "prompt": "Hello!"}"#;

/// The model, which must be a text model this tenant may use.
fn text_model(host: &dyn Host, f: &mut Fields) -> Result<ModelInfo, ApiError> {
    let model = f.required_string("model")?;
    let info = host
        .get_model(&model)
        .ok_or_else(|| ApiError::model_not_found(&model))?;
    match info.kind {
        ModelKind::Chat | ModelKind::Completion | ModelKind::Embedding => Ok(info),
        _ => Err(ApiError::invalid(
            "model",
            format!("The model '{model}' has no tokenizer."),
        )),
    }
}

/// `{"model", "prompt"}` or `{"model", "messages"}` (with the chat route's
/// `add_generation_prompt`, `continue_final_message`, `chat_template_kwargs`) →
/// `{"count", "max_model_len", "tokens"}`. `add_special_tokens` defaults to true
/// for a prompt (BOS, as `/v1/completions` adds it) and false for messages (the
/// template writes its own).
pub fn tokenize(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let info = text_model(host, &mut f)?;
    let (text, default_special) = match (f.take("prompt"), f.take("messages")) {
        (Some(prompt), None) => match parse_prompts(prompt)?.as_slice() {
            [Prompt::Text(text)] => (text.clone(), true),
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "'prompt' must be one string here.",
                ))
            }
        },
        (None, Some(messages)) => {
            let messages = parse_messages(messages)?;
            let render = parse_render_options(&mut f, &messages)?;
            if info.kind != ModelKind::Chat && render.template.is_none() {
                return Err(template::no_template(&info));
            }
            (template::render_prompt(&info, &messages, &render)?, false)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "Send 'prompt' or 'messages', not both.",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "prompt",
                "Missing required parameter: 'prompt' (or 'messages').",
            ))
        }
    };
    let add_special = f.bool("add_special_tokens")?.unwrap_or(default_special);
    f.finish()?;
    let tokens = host
        .encode(&info.id, &text, add_special)
        .map_err(ApiError::from)?;
    let body =
        json!({"count": tokens.len(), "max_model_len": info.context_length, "tokens": tokens});
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// `{"model", "tokens"}` → `{"prompt"}` (special tokens kept, as they were sent).
pub fn detokenize(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let mut f = Fields::new(parse_object(
        body,
        r#"{"model": "...", "tokens": [1, 2, 3]}"#,
    )?);
    let info = text_model(host, &mut f)?;
    let tokens = match f.take("tokens") {
        Some(v @ serde_json::Value::Array(_)) => match parse_prompts(v) {
            Ok(prompts) => match prompts.as_slice() {
                [Prompt::Tokens(tokens)] => tokens.clone(),
                _ => {
                    return Err(ApiError::invalid(
                        "tokens",
                        "'tokens' must be an array of token ids.",
                    ))
                }
            },
            Err(e) => {
                return Err(ApiError::invalid(
                    "tokens",
                    e.message.replace("prompt", "tokens"),
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "tokens",
                "Missing required parameter: 'tokens' (an array of token ids).",
            ))
        }
    };
    f.finish()?;
    let text = host.decode(&info.id, &tokens).map_err(ApiError::from)?;
    Ok(Response::json(
        200,
        json!({"prompt": text}).to_string().into_bytes(),
    ))
}
