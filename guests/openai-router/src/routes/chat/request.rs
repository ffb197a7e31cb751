//! Parsing and validating a `/v1/chat/completions` request body (everything that
//! needs no model info). Fields this server does not implement are rejected with
//! `unsupported_parameter` unless they are absent, `null` or their no-op value
//! (`"tools": []`, `"response_format": {"type": "text"}`...).

use crate::errors::ApiError;
use crate::routes::json::{
    bad_value, parse_object, unsupported, unsupported_value, wrong_type, Fields,
};
use crate::routes::sampling::{self, Endpoint, Sampling};
use serde_json::Value;

const EXAMPLE: &str = r#"{"model": "...", "messages": [{"role": "user", "content": "Hello!"}]}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system`, and OpenAI's newer `developer`.
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A message as the chat template sees it: text content only.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// A string content, or the text parts joined with `\n`.
    pub content: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub sampling: Sampling,
}

pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let model = f.required_string("model")?;
    let messages = match f.take("messages") {
        None => {
            return Err(ApiError::invalid(
                "messages",
                "Missing required parameter: 'messages'.",
            ))
        }
        Some(v) => parse_messages(v)?,
    };
    let sampling = sampling::parse(&mut f, Endpoint::Chat)?;
    reject_unsupported(&mut f)?;
    f.finish()?;
    Ok(ChatRequest {
        model,
        messages,
        sampling,
    })
}

/// The chat-only fields: accepted as no-ops, or rejected as unsupported.
fn reject_unsupported(f: &mut Fields) -> Result<(), ApiError> {
    let is_false = |v: &Value| v == &Value::Bool(false);
    let is_empty_array = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    let is_none_str = |v: &Value| v == "none";
    let no_tools = "is not supported: this server does not implement tool or function calling.";

    for name in ["tools", "functions"] {
        match f.take(name) {
            None => {}
            Some(v) if is_empty_array(&v) => {}
            Some(Value::Array(_)) => return Err(unsupported(name, format!("'{name}' {no_tools}"))),
            Some(other) => return Err(wrong_type(name, "an array", &other)),
        }
    }
    f.reject_unless("tool_choice", is_none_str, no_tools)?;
    f.reject_unless("function_call", is_none_str, no_tools)?;
    // Without tools there is nothing to call in parallel: any boolean is a no-op.
    f.bool("parallel_tool_calls")?;

    match f.take("response_format") {
        None => {}
        Some(Value::Object(m)) => {
            let mut rf = Fields::nested(m, "response_format");
            match rf.string("type")?.as_deref() {
                Some("text") => {}
                Some(t @ ("json_object" | "json_schema")) => {
                    return Err(unsupported_value(
                        "response_format",
                        format!(
                            "'response_format' of type '{t}' is not supported; only 'text' is."
                        ),
                    ))
                }
                Some(t) => {
                    return Err(bad_value(
                        "response_format.type",
                        format!("'{t}'. Supported values are: 'text'."),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        "response_format.type",
                        "Missing required parameter: 'response_format.type'.",
                    ))
                }
            }
            rf.finish()?;
        }
        Some(other) => return Err(wrong_type("response_format", "an object", &other)),
    }

    let stored = "is not supported: this server does not store completions.";
    f.reject_unless("store", is_false, stored)?;
    f.reject_unless(
        "metadata",
        |v| v.as_object().is_some_and(|m| m.is_empty()),
        stored,
    )?;
    f.reject_unless(
        "service_tier",
        |v| v == "auto" || v == "default",
        "is not supported except for 'auto' and 'default'.",
    )?;
    f.reject_unless(
        "modalities",
        |v| v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
        "is not supported except for [\"text\"].",
    )?;
    for name in [
        "audio",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "verbosity",
    ] {
        f.reject_unless(name, |_| false, "is not supported.")?;
    }
    // Like `user`: identifiers and cache hints for OpenAI's side, nothing to do here.
    f.string("safety_identifier")?;
    f.string("prompt_cache_key")?;
    Ok(())
}

/// `messages`: a non-empty array of message objects.
pub fn parse_messages(v: Value) -> Result<Vec<Message>, ApiError> {
    let items = match v {
        Value::Array(items) => items,
        other => return Err(wrong_type("messages", "an array of messages", &other)),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_message(item, &format!("messages[{i}]")))
        .collect()
}

fn parse_message(v: Value, path: &str) -> Result<Message, ApiError> {
    let map = match v {
        Value::Object(m) => m,
        other => return Err(wrong_type(path, "a message object", &other)),
    };
    let mut f = Fields::nested(map, path);
    let role_path = f.path("role");
    let role = match f.string("role")?.as_deref() {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(r @ ("tool" | "function")) => {
            return Err(unsupported(
                &role_path,
                format!(
                    "'{role_path}' is '{r}': tool and function messages are not supported \
                     (this server does not implement tool calling)."
                ),
            ))
        }
        Some(r) => {
            return Err(bad_value(
                &role_path,
                format!(
                    "'{r}'. Supported values are: 'system', 'developer', 'user' and 'assistant'."
                ),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                &role_path,
                format!("Missing required parameter: '{role_path}'."),
            ))
        }
    };
    let content_path = f.path("content");
    let content = match f.take("content") {
        None => {
            return Err(ApiError::invalid(
                &content_path,
                format!("Missing required parameter: '{content_path}'."),
            ))
        }
        Some(v) => parse_content(v, &content_path)?,
    };
    let name = f.string("name")?;
    let no_tools = "is not supported: this server does not implement tool calling.";
    f.reject_unless(
        "tool_calls",
        |v| v.as_array().is_some_and(Vec::is_empty),
        no_tools,
    )?;
    f.reject_unless("function_call", |_| false, no_tools)?;
    f.reject_unless("tool_call_id", |_| false, no_tools)?;
    f.reject_unless("refusal", |_| false, "is not supported.")?;
    f.reject_unless("audio", |_| false, "is not supported.")?;
    f.finish()?;
    Ok(Message {
        role,
        content,
        name,
    })
}

/// A string, or an array of `{"type": "text", "text": "..."}` parts (joined with
/// `\n`, as vLLM does for text-only templates).
fn parse_content(v: Value, path: &str) -> Result<String, ApiError> {
    let parts = match v {
        Value::String(s) => return Ok(s),
        Value::Array(parts) => parts,
        other => {
            return Err(wrong_type(
                path,
                "a string or an array of content parts",
                &other,
            ))
        }
    };
    if parts.is_empty() {
        return Err(ApiError::invalid(
            path,
            format!("'{path}' must be a string or a non-empty array of content parts."),
        ));
    }
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let part_path = format!("{path}[{j}]");
        let map = match part {
            Value::Object(m) => m,
            other => return Err(wrong_type(&part_path, "a content part object", &other)),
        };
        let mut p = Fields::nested(map, &part_path);
        let type_path = p.path("type");
        match p.string("type")?.as_deref() {
            Some("text") => {}
            Some(t) => {
                return Err(unsupported_value(
                    &type_path,
                    format!(
                        "'{type_path}' is '{t}'; only text content parts ('type': 'text') are supported."
                    ),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    &type_path,
                    format!("Missing required parameter: '{type_path}'."),
                ))
            }
        }
        let text_path = p.path("text");
        let text = p.string("text")?.ok_or_else(|| {
            ApiError::invalid(
                &text_path,
                format!("Missing required parameter: '{text_path}'."),
            )
        })?;
        p.finish()?;
        texts.push(text);
    }
    Ok(texts.join("\n"))
}
