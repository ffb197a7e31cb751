//! Parsing and validating a `/v1/chat/completions` request body (everything that
//! needs no model info). Fields this server does not implement are rejected with
//! `unsupported_parameter` unless they are absent, `null` or their no-op value
//! (`"tools": []`, `"response_format": {"type": "text"}`...). `response_format`
//! `json_object` and `json_schema` are JSON mode (the host constrains the output).

use super::template::RenderOptions;
use super::tools::{self, Tools};
use crate::errors::ApiError;
use crate::routes::json::{
    bad_value, check_name, parse_object, unsupported, unsupported_value, wrong_type, Fields,
};
use crate::routes::sampling::{self, Endpoint, ResponseFormat, Sampling};
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
    /// Tools the model may call (None: none, or `tool_choice` `none`).
    pub tools: Option<Tools>,
    /// `store: true`: the request's messages as sent, to be stored with the answer.
    pub stored_messages: Option<Vec<Value>>,
    /// `metadata` (checked; `{}` when absent).
    pub metadata: Value,
    /// `add_generation_prompt`, `continue_final_message`, `chat_template_kwargs`.
    pub render: RenderOptions,
    /// vLLM's `add_special_tokens`: let the tokenizer add BOS to the rendered prompt.
    pub add_special_tokens: bool,
}

pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let model = f.required_string("model")?;
    let store = f.bool("store")?.unwrap_or(false);
    let metadata = match f.take("metadata") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => super::stored::check_metadata(v, "metadata")?,
    };
    let (messages, stored_messages) = match f.take("messages") {
        None => {
            return Err(ApiError::invalid(
                "messages",
                "Missing required parameter: 'messages'.",
            ))
        }
        Some(v) => {
            let raw = match (&v, store) {
                (Value::Array(items), true) => Some(items.clone()),
                _ => None,
            };
            (parse_messages(v)?, raw)
        }
    };
    let mut sampling = sampling::parse(&mut f, Endpoint::Chat)?;
    let tools = tools::parse(&mut f)?;
    let response_format = parse_chat_only_fields(&mut f)?;
    let render = parse_render_options(&mut f, &messages)?;
    // vLLM's: the rendered template carries its own BOS, so false by default.
    let add_special_tokens = f.bool("add_special_tokens")?.unwrap_or(false);
    f.finish()?;
    if response_format != ResponseFormat::Text {
        if let Some(field) = sampling.structured_param {
            return Err(ApiError::invalid(
                field,
                format!(
                    "'{field}' cannot be combined with 'response_format': the output has one form."
                ),
            ));
        }
        sampling.format = response_format;
    }
    if tools.is_some() {
        if let Some(field) = sampling.structured_param {
            return Err(ApiError::invalid(
                field,
                format!("'{field}' cannot be combined with 'tools': with tools the answer's form is the tool calls'."),
            ));
        }
    }
    if render.continue_final_message && (tools.is_some() || sampling.format != ResponseFormat::Text)
    {
        return Err(ApiError::invalid(
            "continue_final_message",
            "'continue_final_message' cannot be combined with 'tools' or a JSON 'response_format': their answers start from scratch.",
        ));
    }
    if sampling.format == ResponseFormat::JsonObject && !mentions_json(&messages) {
        // OpenAI's rule: a model not told to write JSON may fill the output with whitespace.
        return Err(ApiError::invalid(
            "messages",
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        ));
    }
    // Beside tools the format holds an answer in words; the tools' schema is the output's.
    let mut tools = tools;
    if let Some(tools) = tools.as_mut() {
        tools.answer_schema = tools::answer_schema(&sampling.format);
        sampling.format = ResponseFormat::Text;
    }
    Ok(ChatRequest {
        model,
        messages,
        sampling,
        tools,
        stored_messages,
        metadata,
        render,
        add_special_tokens,
    })
}

/// The longest `chat_template` a request may bring (the models' own are 1-4 KB).
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// vLLM's template options: `add_generation_prompt` (default true, false when
/// continuing), `continue_final_message` (the last message must be the
/// assistant's, with text) and `chat_template_kwargs` (an object).
pub fn parse_render_options(
    f: &mut Fields,
    messages: &[Message],
) -> Result<RenderOptions, ApiError> {
    let kwargs = match f.take("chat_template_kwargs") {
        None => Default::default(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type("chat_template_kwargs", "an object", &other)),
    };
    let template = f.string("chat_template")?;
    if template
        .as_deref()
        .is_some_and(|t| t.len() > MAX_TEMPLATE_BYTES)
    {
        return Err(bad_value(
            "chat_template",
            format!("it is longer than {MAX_TEMPLATE_BYTES} bytes."),
        ));
    }
    f.reject_unless(
        "documents",
        |_| false,
        "is not supported: these models' templates take no documents.",
    )?;
    let continue_final_message = f.bool("continue_final_message")?.unwrap_or(false);
    let add_generation_prompt = match f.bool("add_generation_prompt")? {
        Some(true) if continue_final_message => {
            return Err(ApiError::invalid(
                "continue_final_message",
                "'continue_final_message' and 'add_generation_prompt' cannot both be true.",
            ))
        }
        Some(add) => add,
        None => !continue_final_message,
    };
    if continue_final_message {
        match messages.last() {
            Some(m) if m.role == Role::Assistant && !m.content.trim().is_empty() => {}
            _ => {
                return Err(ApiError::invalid(
                    "continue_final_message",
                    "'continue_final_message' needs the last message to be the assistant's, with the text to continue.",
                ))
            }
        }
    }
    Ok(RenderOptions {
        add_generation_prompt,
        continue_final_message,
        kwargs,
        template,
    })
}

fn mentions_json(messages: &[Message]) -> bool {
    messages
        .iter()
        .any(|m| m.content.to_ascii_lowercase().contains("json"))
}

/// The chat-only fields: accepted as no-ops, or rejected as unsupported. Returns
/// the `response_format`.
fn parse_chat_only_fields(f: &mut Fields) -> Result<ResponseFormat, ApiError> {
    let format = match f.take("response_format") {
        None => ResponseFormat::Text,
        Some(Value::Object(m)) => parse_response_format(Fields::nested(m, "response_format"))?,
        Some(other) => return Err(wrong_type("response_format", "an object", &other)),
    };

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
    sampling::openai_hints(f)?;
    Ok(format)
}

/// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
/// "json_schema": {"name", "schema", "strict", "description"}}`. The schema goes to
/// the host as JSON text; the host says what in it cannot be enforced.
fn parse_response_format(mut rf: Fields) -> Result<ResponseFormat, ApiError> {
    let format = match rf.string("type")?.as_deref() {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => {
            let spec = match rf.take("json_schema") {
                Some(Value::Object(m)) => m,
                None => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema",
                        "Missing required parameter: 'response_format.json_schema'.",
                    ))
                }
                Some(other) => {
                    return Err(wrong_type(
                        "response_format.json_schema",
                        "an object",
                        &other,
                    ))
                }
            };
            let mut spec = Fields::nested(spec, "response_format.json_schema");
            let name = spec.required_string("name")?;
            check_name("response_format.json_schema.name", &name)?;
            spec.string("description")?;
            spec.bool("strict")?;
            let schema = match spec.take("schema") {
                // No schema: any object.
                None => r#"{"type": "object"}"#.to_string(),
                Some(schema @ Value::Object(_)) => schema.to_string(),
                Some(other) => {
                    return Err(wrong_type(
                        "response_format.json_schema.schema",
                        "an object",
                        &other,
                    ))
                }
            };
            spec.finish()?;
            ResponseFormat::JsonSchema(schema)
        }
        Some(t) => {
            return Err(bad_value(
                "response_format.type",
                format!("'{t}'. Supported values are: 'text', 'json_object' and 'json_schema'."),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "response_format.type",
                "Missing required parameter: 'response_format.type'.",
            ))
        }
    };
    rf.finish()?;
    Ok(format)
}

/// `messages`: a non-empty array of message objects. Earlier tool calls and their
/// results become text the model reads ([`tools`]).
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
    // Call id → function name, from the assistant turns so far.
    let mut called: Vec<(String, String, String)> = Vec::new();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_message(item, &format!("messages[{i}]"), &mut called))
        .collect()
}

fn parse_message(
    v: Value,
    path: &str,
    called: &mut Vec<(String, String, String)>,
) -> Result<Message, ApiError> {
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
        Some("tool") => return parse_tool_result(f, called),
        Some("function") => {
            return Err(unsupported(
                &role_path,
                format!(
                    "'{role_path}' is 'function' (deprecated): use 'tool' messages with 'tools'."
                ),
            ))
        }
        Some(r) => {
            return Err(bad_value(
                &role_path,
                format!(
                    "'{r}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'."
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
    let calls = match f.take("tool_calls") {
        Some(v) if role == Role::Assistant => parse_tool_calls(v, &f.path("tool_calls"))?,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            let p = f.path("tool_calls");
            return Err(ApiError::invalid(
                &p,
                format!("'{p}' is only allowed in assistant messages."),
            ));
        }
    };
    let content_path = f.path("content");
    let content = match f.take("content") {
        // An assistant turn that only called tools has no content.
        None | Some(Value::Null) if !calls.is_empty() => String::new(),
        None => {
            return Err(ApiError::invalid(
                &content_path,
                format!("Missing required parameter: '{content_path}'."),
            ))
        }
        Some(v) => parse_content(v, &content_path)?,
    };
    let name = f.string("name")?;
    f.reject_unless(
        "function_call",
        |_| false,
        "is not supported: use 'tool_calls'.",
    )?;
    f.reject_unless("refusal", |_| false, "is not supported.")?;
    f.reject_unless("audio", |_| false, "is not supported.")?;
    f.ignore_rest();
    let content = if calls.is_empty() {
        content
    } else {
        let text = tools::calls_as_text(
            &calls
                .iter()
                .map(|(_, name, args)| (name.clone(), args.clone()))
                .collect::<Vec<_>>(),
        );
        called.extend(calls);
        text
    };
    Ok(Message {
        role,
        content,
        name,
    })
}

/// A `tool` message: a call's result, read by the model as a user turn.
fn parse_tool_result(
    mut f: Fields,
    called: &[(String, String, String)],
) -> Result<Message, ApiError> {
    let id = f.required_string("tool_call_id")?;
    let content_path = f.path("content");
    let content = match f.take("content") {
        Some(v) => parse_content(v, &content_path)?,
        None => {
            return Err(ApiError::invalid(
                &content_path,
                format!("Missing required parameter: '{content_path}'."),
            ))
        }
    };
    f.string("name")?;
    f.ignore_rest();
    let call = called
        .iter()
        .rev()
        .find(|(call, _, _)| *call == id)
        .map(|(_, name, arguments)| (name.as_str(), arguments.as_str()));
    Ok(Message {
        role: Role::User,
        content: tools::result_as_text(call, &id, &content),
        name: None,
    })
}

/// An assistant message's `tool_calls`: (id, function name, arguments text).
fn parse_tool_calls(v: Value, path: &str) -> Result<Vec<(String, String, String)>, ApiError> {
    let items = match v {
        Value::Array(items) => items,
        other => return Err(wrong_type(path, "an array", &other)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{path}[{i}]");
            let Value::Object(m) = item else {
                return Err(wrong_type(&path, "a tool call object", &item));
            };
            let mut c = Fields::nested(m, &path);
            let id = c.required_string("id")?;
            c.string("type")?;
            let function = match c.take("function") {
                Some(Value::Object(m)) => m,
                other => {
                    return Err(wrong_type(
                        &c.path("function"),
                        "an object",
                        &other.unwrap_or(Value::Null),
                    ))
                }
            };
            c.finish()?;
            let mut f = Fields::nested(function, &format!("{path}.function"));
            let name = f.required_string("name")?;
            let arguments = f.string("arguments")?.unwrap_or_else(|| "{}".into());
            f.finish()?;
            Ok((id, name, arguments))
        })
        .collect()
}

/// A string, or an array of `{"type": "text", "text": "..."}` parts (joined with
/// `\n`, as vLLM does for text-only templates).
fn parse_content(v: Value, path: &str) -> Result<String, ApiError> {
    parse_content_text(v, path, &["text"])
}

/// [`parse_content`] with the text part types of an API (`/v1/responses` calls
/// them `input_text` and `output_text`); other parts (images, files, audio) are
/// unsupported. Parts the API itself returned may carry `annotations` and
/// `logprobs`, which say nothing to the model.
pub fn parse_content_text(v: Value, path: &str, text_types: &[&str]) -> Result<String, ApiError> {
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
            Some(t) if text_types.contains(&t) => {}
            Some(t) => {
                let expected = text_types.join("', '");
                return Err(unsupported_value(
                    &type_path,
                    format!(
                        "'{type_path}' is '{t}'; only text content parts ('type': '{expected}') are supported."
                    ),
                ));
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
        p.ignore_rest();
        texts.push(text);
    }
    Ok(texts.join("\n"))
}
