//! Parsing a `/v1/responses` request into what the chat path understands: the
//! conversation (`instructions` and `input` items as chat messages, earlier
//! function calls and their outputs as text the model reads), the sampling fields,
//! `text.format` and the (flat) function tools.

use crate::errors::ApiError;
use crate::routes::chat::request::{parse_content_text, Message, Role};
use crate::routes::chat::tools::{self, ChoiceForm, Tool, Tools};
use crate::routes::json::{
    bad_value, check_name, parse_object, unsupported_value, wrong_type, Fields,
};
use crate::routes::sampling::{self, ResponseFormat, Sampling};
use serde_json::{json, Value};

const EXAMPLE: &str = r#"{"model": "...", "input": "Hello!"}"#;

#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    /// `instructions` and `input` as a chat conversation (without what an earlier
    /// response holds: see [`conversation`]).
    pub messages: Vec<Message>,
    pub instructions: Option<String>,
    /// `input` as items (a string is one user message).
    pub input: Vec<Value>,
    pub previous_response_id: Option<String>,
    /// A stored conversation: its items come before `input`, and the response's
    /// input and output are added to it.
    pub conversation: Option<String>,
    /// Keep the response (OpenAI's default).
    pub store: bool,
    pub sampling: Sampling,
    pub tools: Option<Tools>,
    /// `truncation: "auto"`: a conversation too long for the context loses its
    /// oldest turns (see `super::fit`).
    pub truncation_auto: bool,
    /// Echoed in the response object as the request gave them.
    pub echo: Echo,
}

/// Request fields the response object repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub instructions: Value,
    pub max_output_tokens: Value,
    pub temperature: f32,
    pub top_p: f32,
    pub tools: Value,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text_format: Value,
    pub metadata: Value,
    pub user: Value,
    pub store: bool,
    pub previous_response_id: Value,
    pub top_logprobs: Value,
    pub conversation: Value,
    pub truncation: &'static str,
}

/// What `include` may name: `message.output_text.logprobs` (true: the answer's
/// tokens with their log probabilities), and `reasoning.encrypted_content`, of
/// which these models have none. The others belong to tools this server lacks.
fn parse_include(value: Option<Value>) -> Result<bool, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("include", "an array of strings", &other)),
    };
    let mut logprobs = false;
    for (i, item) in items.iter().enumerate() {
        let param = format!("include[{i}]");
        match item.as_str() {
            Some("message.output_text.logprobs") => logprobs = true,
            Some("reasoning.encrypted_content") => {}
            Some(other) => {
                return Err(unsupported_value(
                    &param,
                    format_args!(
                        "'{other}' cannot be included here; 'message.output_text.logprobs' can \
                         (and 'reasoning.encrypted_content', which these models do not make)."
                    ),
                ))
            }
            None => return Err(wrong_type(&param, "a string", item)),
        }
    }
    Ok(logprobs)
}

pub fn parse_request(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let mut f = Fields::new(parse_object(body, EXAMPLE)?);
    let model = f.required_string("model")?;
    let instructions = f.string("instructions")?;
    let input = match f.take("input") {
        None => {
            return Err(ApiError::invalid(
                "input",
                "Missing required parameter: 'input'.",
            ))
        }
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": text}]})]
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "input",
                "'input' must be a string or a non-empty array of items.",
            ))
        }
        Some(other) => return Err(wrong_type("input", "a string or an array of items", &other)),
    };
    let messages = conversation(instructions.as_deref(), &[], &input)?;
    let max_output_tokens = f.integer("max_output_tokens", 1, i128::from(u32::MAX))?;
    let (temperature, top_p) = sampling::temperature_and_top_p(&mut f)?;
    let stream = f.bool("stream")?.unwrap_or(false);
    if let Some(options) = crate::routes::sampling::stream_options(&mut f, stream)? {
        options.finish()?;
    }
    let (format, text_format) = parse_text(f.take("text"))?;
    let tool_list = match f.take("tools") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| parse_tool(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(wrong_type("tools", "an array", &other)),
    };
    if tool_list.len() > tools::MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "'tools' has {} entries; at most {} are allowed.",
                tool_list.len(),
                tools::MAX_TOOLS
            ),
        ));
    }
    let tool_choice_value = f.take("tool_choice");
    let choice = tools::parse_choice(tool_choice_value.clone(), &tool_list, ChoiceForm::Flat)?;
    let parallel_tool_calls = f.bool("parallel_tool_calls")?.unwrap_or(true);
    let echo_tools: Value = tool_list
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                   "parameters": t.parameters, "strict": true})
        })
        .collect();
    // Beside tools the format holds an answer in words; the tools' schema is the output's.
    let tools = choice.map(|choice| Tools {
        tools: tool_list,
        choice,
        parallel: parallel_tool_calls,
        answer_schema: tools::answer_schema(&format),
    });
    let format = if tools.is_some() {
        ResponseFormat::Text
    } else {
        format
    };
    let store = f.bool("store")?.unwrap_or(true);
    let previous_response_id = f.string("previous_response_id")?;
    let metadata = match f.take("metadata") {
        None => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(other) => return Err(wrong_type("metadata", "an object", &other)),
    };
    let user = f.string("user")?;
    crate::routes::sampling::openai_hints(&mut f)?;
    let truncation_auto = match f.take("truncation") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "disabled" => false,
        Some(Value::String(s)) if s == "auto" => true,
        Some(Value::String(s)) => {
            return Err(bad_value(
                "truncation",
                format!("'{s}' is not supported; use 'auto' or 'disabled'."),
            ))
        }
        Some(other) => return Err(wrong_type("truncation", "a string", &other)),
    };
    f.reject_unless(
        "service_tier",
        |v| v == "auto" || v == "default",
        "is not supported except for 'auto' and 'default'.",
    )?;
    let logprobs_included = parse_include(f.take("include"))?;
    let top_logprobs = f.integer(
        "top_logprobs",
        0,
        i128::from(sampling::MAX_TOP_LOGPROBS_CHAT),
    )?;
    f.reject_unless(
        "reasoning",
        |v| {
            v.as_object()
                .is_some_and(|m| m.values().all(Value::is_null))
        },
        "is not supported: these models do not reason.",
    )?;
    f.reject_unless(
        "background",
        |v| v == &Value::Bool(false),
        "is not supported.",
    )?;
    f.reject_unless(
        "prompt",
        |_| false,
        "is not supported: this server does not store prompt templates.",
    )?;
    let conversation = match f.take("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(Value::Object(mut m)) => match m.remove("id") {
            Some(Value::String(id)) => Some(id),
            _ => {
                return Err(ApiError::invalid(
                    "conversation.id",
                    "Missing required parameter: 'conversation.id'.",
                ))
            }
        },
        Some(other) => {
            return Err(wrong_type(
                "conversation",
                "a conversation id or {\"id\"}",
                &other,
            ))
        }
    };
    if conversation.is_some() && previous_response_id.is_some() {
        return Err(ApiError::invalid(
            "conversation",
            "'conversation' and 'previous_response_id' cannot be used together: each names what \
             comes before 'input'.",
        ));
    }
    f.finish()?;
    let sampling = Sampling {
        temperature,
        top_p,
        stream,
        // Asking for alternatives implies wanting the tokens' own log probabilities.
        logprobs: (logprobs_included || top_logprobs.is_some_and(|n| n > 0))
            .then(|| top_logprobs.unwrap_or(0) as u32),
        format,
        ..Sampling::defaults(max_output_tokens.map(|n| n as u32), "max_output_tokens")
    };
    Ok(ResponsesRequest {
        model,
        messages,
        instructions: instructions.clone(),
        input,
        previous_response_id: previous_response_id.clone(),
        conversation: conversation.clone(),
        store,
        sampling,
        tools,
        echo: Echo {
            instructions: instructions.map_or(Value::Null, Value::String),
            max_output_tokens: max_output_tokens.map_or(Value::Null, |n| json!(n as u64)),
            temperature,
            top_p,
            tools: echo_tools,
            tool_choice: tool_choice_value.unwrap_or(json!("auto")),
            parallel_tool_calls,
            text_format,
            metadata,
            user: user.map_or(Value::Null, Value::String),
            store,
            previous_response_id: previous_response_id.map_or(Value::Null, Value::String),
            top_logprobs: json!(top_logprobs.unwrap_or(0) as u64),
            conversation: conversation.map_or(Value::Null, |id| json!({"id": id})),
            truncation: if truncation_auto { "auto" } else { "disabled" },
        },
        truncation_auto,
    })
}

/// The chat conversation: `instructions` as the system message, then the items of
/// earlier responses (`previous_response_id`), then this request's `input` items.
/// The earlier ones were checked when they were stored; errors in `input` name it.
pub fn conversation(
    instructions: Option<&str>,
    earlier: &[Value],
    input: &[Value],
) -> Result<Vec<Message>, ApiError> {
    let mut messages = Vec::new();
    if let Some(text) = instructions {
        messages.push(Message {
            role: Role::System,
            content: text.to_string(),
            name: None,
        });
    }
    let items = earlier.iter().chain(input).cloned().collect();
    parse_items(items, earlier.len(), &mut messages)?;
    Ok(messages)
}

/// `input` items: messages, earlier function calls and their outputs (the first
/// `first_input` items come from a stored response; an error there names
/// `previous_response_id`).
fn parse_items(
    items: Vec<Value>,
    first_input: usize,
    messages: &mut Vec<Message>,
) -> Result<(), ApiError> {
    // Call id → function name, for the outputs that answer them.
    let mut called: Vec<(String, String, String)> = Vec::new();
    // Consecutive function calls are one assistant turn.
    let mut pending_calls: Vec<(String, String)> = Vec::new();
    let flush = |pending: &mut Vec<(String, String)>, messages: &mut Vec<Message>| {
        if !pending.is_empty() {
            messages.push(Message {
                role: Role::Assistant,
                content: tools::calls_as_text(pending),
                name: None,
            });
            pending.clear();
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let path = match i.checked_sub(first_input) {
            Some(i) => format!("input[{i}]"),
            None => "previous_response_id".to_string(),
        };
        let Value::Object(map) = item else {
            return Err(wrong_type(&path, "an input item object", &item));
        };
        let mut f = Fields::nested(map, &path);
        let kind = f.string("type")?;
        match kind.as_deref() {
            None | Some("message") => {
                flush(&mut pending_calls, messages);
                let role = match f.string("role")?.as_deref() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    Some(r) => return Err(bad_value(&f.path("role"), format!("'{r}'. Supported values are: 'user', 'assistant', 'system' and 'developer'."))),
                    None => {
                        let p = f.path("role");
                        return Err(ApiError::invalid(&p, format!("Missing required parameter: '{p}'.")));
                    }
                };
                let content_path = f.path("content");
                let content = match f.take("content") {
                    Some(v) => parse_content_text(v, &content_path, &["input_text", "output_text", "text"])?,
                    None => return Err(ApiError::invalid(&content_path, format!("Missing required parameter: '{content_path}'."))),
                };
                f.ignore_rest();
                messages.push(Message { role, content, name: None });
            }
            Some("function_call") => {
                let call_id = f.required_string("call_id")?;
                let name = f.required_string("name")?;
                let arguments = f.string("arguments")?.unwrap_or_else(|| "{}".into());
                f.ignore_rest();
                called.push((call_id, name.clone(), arguments.clone()));
                pending_calls.push((name, arguments));
            }
            Some("function_call_output") => {
                flush(&mut pending_calls, messages);
                let call_id = f.required_string("call_id")?;
                let output = match f.take("output") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => {
                        let p = f.path("output");
                        return Err(ApiError::invalid(&p, format!("Missing required parameter: '{p}'.")));
                    }
                };
                f.ignore_rest();
                let call = called
                    .iter()
                    .rev()
                    .find(|(id, _, _)| *id == call_id)
                    .map(|(_, name, arguments)| (name.as_str(), arguments.as_str()));
                messages.push(Message {
                    role: Role::User,
                    content: tools::result_as_text(call, &call_id, &output),
                    name: None,
                });
            }
            Some(other) => {
                return Err(unsupported_value(
                    &f.path("type"),
                    format!("'{other}': only 'message', 'function_call' and 'function_call_output' items are supported."),
                ))
            }
        }
    }
    flush(&mut pending_calls, messages);
    Ok(())
}

/// `text: {"format": {"type": "text" | "json_object" | "json_schema", ...}}`; also
/// the format object the response repeats.
fn parse_text(text: Option<Value>) -> Result<(ResponseFormat, Value), ApiError> {
    let text_only = json!({"type": "text"});
    let map = match text {
        None => return Ok((ResponseFormat::Text, text_only)),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type("text", "an object", &other)),
    };
    let mut t = Fields::nested(map, "text");
    t.reject_unless(
        "verbosity",
        |v| v == "medium",
        "is not supported except for 'medium'.",
    )?;
    let format = match t.take("format") {
        None => return t.finish().map(|()| (ResponseFormat::Text, text_only)),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type("text.format", "an object", &other)),
    };
    t.finish()?;
    let echo = Value::Object(format.clone());
    let mut f = Fields::nested(format, "text.format");
    let parsed = match f.string("type")?.as_deref() {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => {
            let name = f.required_string("name")?;
            check_name("text.format.name", &name)?;
            f.string("description")?;
            f.bool("strict")?;
            let schema = match f.take("schema") {
                Some(s @ Value::Object(_)) => s.to_string(),
                Some(other) => return Err(wrong_type("text.format.schema", "an object", &other)),
                None => {
                    return Err(ApiError::invalid(
                        "text.format.schema",
                        "Missing required parameter: 'text.format.schema'.",
                    ))
                }
            };
            ResponseFormat::JsonSchema(schema)
        }
        Some(other) => {
            return Err(bad_value(
                "text.format.type",
                format!(
                    "'{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."
                ),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "text.format.type",
                "Missing required parameter: 'text.format.type'.",
            ))
        }
    };
    f.finish()?;
    Ok((parsed, echo))
}

/// A flat function tool: `{"type": "function", "name", "description", "parameters", "strict"}`.
fn parse_tool(v: Value, path: &str) -> Result<Tool, ApiError> {
    let mut f = tools::function_tool(v, path)?;
    let tool = tools::function_fields(&mut f)?;
    f.finish()?;
    Ok(tool)
}
