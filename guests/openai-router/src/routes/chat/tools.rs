//! Tool calling for models without a tool format of their own (llama.cpp's
//! "generic" approach): the tools are described in a system message, and the host's
//! structured output makes the model answer with one JSON object, either
//! `{"tool_calls": [{"name": …, "arguments": {…}}]}` (each call's arguments held to
//! its tool's `parameters` schema) or, with `tool_choice` `auto`, `{"response": "…"}`.
//! The router turns that object into OpenAI's `tool_calls` or plain content, and
//! earlier turns' calls and results back into text the model reads.

use crate::errors::ApiError;
use crate::routes::json::{bad_value, check_name, unsupported_value, wrong_type, Fields};
use crate::routes::sampling::ResponseFormat;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// OpenAI's limit.
pub const MAX_TOOLS: usize = 128;
/// Most calls in one answer: a small model asked for "one or more" calls may
/// otherwise repeat its call until `max_tokens`.
pub const MAX_CALLS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Call tools or answer.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this tool.
    Named(String),
}

/// The tools a request offers and how the model may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Several calls in one answer (`parallel_tool_calls`, default true).
    pub parallel: bool,
    /// With `tool_choice` `auto`: the JSON Schema an answer in words follows, when
    /// the request's `response_format` asks for JSON (OpenAI applies the format to
    /// answers that are not calls). None: free text.
    pub answer_schema: Option<Value>,
}

/// `tools`, `tool_choice` and `parallel_tool_calls`. None when no tools are offered
/// or `tool_choice` is `none` (the model then answers as without tools).
pub fn parse(f: &mut Fields) -> Result<Option<Tools>, ApiError> {
    // The deprecated function calling; clients that send every field send it empty.
    let why = "is not supported: use 'tools' and 'tool_choice'.";
    f.reject_unless(
        "functions",
        |v| v.as_array().is_some_and(Vec::is_empty),
        why,
    )?;
    f.reject_unless(
        "function_call",
        |v| matches!(v.as_str(), Some("none" | "auto")),
        why,
    )?;
    let tools = match f.take("tools") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_TOOLS {
                return Err(ApiError::invalid(
                    "tools",
                    format!(
                        "'tools' has {} entries; at most {MAX_TOOLS} are allowed.",
                        items.len()
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, t)| parse_tool(t, &format!("tools[{i}]")))
                .collect::<Result<_, _>>()?
        }
        Some(other) => return Err(wrong_type("tools", "an array", &other)),
    };
    let choice = parse_choice(f.take("tool_choice"), &tools, ChoiceForm::Nested)?;
    let parallel = f.bool("parallel_tool_calls")?.unwrap_or(true);
    Ok(choice.map(|choice| Tools {
        tools,
        choice,
        parallel,
        answer_schema: None,
    }))
}

/// The schema an answer in words follows beside tools, for a JSON output format
/// (`json_object`: any object).
pub fn answer_schema(format: &ResponseFormat) -> Option<Value> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!({"type": "object"})),
        ResponseFormat::JsonSchema(text) => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| json!({"type": "object"})))
        }
    }
}

/// Where an answer schema's definitions go in the answer schema's `$defs` (a name
/// no tool can have).
const ANSWER_DEFS: &str = ":response";

/// Where a named `tool_choice` puts the function's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceForm {
    /// Chat: `{"type": "function", "function": {"name": …}}`.
    Nested,
    /// Responses: `{"type": "function", "name": …}`.
    Flat,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"` or a named function (in `form`).
/// None: the model answers as without tools (no tools offered, or `"none"`). A
/// choice needs tools, and a named function must be one of them.
pub fn parse_choice(
    v: Option<Value>,
    tools: &[Tool],
    form: ChoiceForm,
) -> Result<Option<ToolChoice>, ApiError> {
    let choice = match v {
        None if tools.is_empty() => return Ok(None),
        None => ToolChoice::Auto,
        Some(Value::String(s)) => {
            match s.as_str() {
                "none" => return Ok(None),
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    let named = match form {
                        ChoiceForm::Nested => r#"{"type": "function", "function": {"name": …}}"#,
                        ChoiceForm::Flat => r#"{"type": "function", "name": …}"#,
                    };
                    return Err(bad_value(
                    "tool_choice",
                    format!("'{other}'. Supported values are: 'none', 'auto', 'required' or {named}."),
                ));
                }
            }
        }
        Some(Value::Object(m)) => {
            let mut c = Fields::nested(m, "tool_choice");
            match c.string("type")?.as_deref() {
                Some("function") => {}
                other => {
                    return Err(unsupported_value(
                        "tool_choice.type",
                        format!("'{}': only 'function' is supported.", other.unwrap_or("")),
                    ))
                }
            }
            let name = match form {
                ChoiceForm::Flat => c.required_string("name")?,
                ChoiceForm::Nested => {
                    let function = match c.take("function") {
                        Some(Value::Object(m)) => m,
                        Some(other) => {
                            return Err(wrong_type("tool_choice.function", "an object", &other))
                        }
                        None => {
                            return Err(ApiError::invalid(
                                "tool_choice.function",
                                "Missing required parameter: 'tool_choice.function'.",
                            ))
                        }
                    };
                    let mut function = Fields::nested(function, "tool_choice.function");
                    let name = function.required_string("name")?;
                    function.finish()?;
                    name
                }
            };
            c.finish()?;
            ToolChoice::Named(name)
        }
        Some(other) => return Err(wrong_type("tool_choice", "a string or an object", &other)),
    };
    check_choice(&choice, tools)?;
    Ok(Some(choice))
}

fn parse_tool(v: Value, path: &str) -> Result<Tool, ApiError> {
    let mut t = function_tool(v, path)?;
    let function_path = t.path("function");
    let function = match t.take("function") {
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type(&function_path, "an object", &other)),
        None => {
            return Err(ApiError::invalid(
                &function_path,
                format!("Missing required parameter: '{function_path}'."),
            ))
        }
    };
    t.finish()?;
    let mut f = Fields::nested(function, &function_path);
    let tool = function_fields(&mut f)?;
    f.finish()?;
    Ok(tool)
}

/// A tool object whose `type` is `function` (the only kind served), its other
/// fields still to read.
pub fn function_tool(v: Value, path: &str) -> Result<Fields, ApiError> {
    let Value::Object(map) = v else {
        return Err(wrong_type(path, "a tool object", &v));
    };
    let mut t = Fields::nested(map, path);
    match t.string("type")?.as_deref() {
        Some("function") => Ok(t),
        Some(other) => Err(unsupported_value(
            &t.path("type"),
            format!("'{other}': only 'function' tools are supported."),
        )),
        None => {
            let p = t.path("type");
            Err(ApiError::invalid(
                &p,
                format!("Missing required parameter: '{p}'."),
            ))
        }
    }
}

/// A function's `name`, `description`, `parameters` (default: an object without
/// properties) and `strict` (the schema is enforced either way).
pub fn function_fields(f: &mut Fields) -> Result<Tool, ApiError> {
    let name = f.required_string("name")?;
    check_name(&f.path("name"), &name)?;
    let description = f.string("description")?;
    let parameters = match f.take("parameters") {
        None => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p,
        Some(other) => return Err(wrong_type(&f.path("parameters"), "an object", &other)),
    };
    f.bool("strict")?;
    Ok(Tool {
        name,
        description,
        parameters,
    })
}

/// A `tool_choice` must come with tools, and a named function must be one of them.
fn check_choice(choice: &ToolChoice, tools: &[Tool]) -> Result<(), ApiError> {
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "'tool_choice' is only allowed when 'tools' are specified.",
        ));
    }
    match choice {
        ToolChoice::Named(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(ApiError::invalid(
                "tool_choice",
                format!("'tool_choice' names the function '{name}', which is not in 'tools'."),
            ))
        }
        _ => Ok(()),
    }
}

impl Tools {
    fn offered(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            ToolChoice::Named(name) => &t.name == name,
            _ => true,
        })
    }

    /// The system message text that tells the model its tools and how to answer.
    pub fn instructions(&self) -> String {
        let mut text = String::from("You can call these tools (JSON, one per line):\n");
        for t in self.offered() {
            let mut entry = Map::new();
            entry.insert("name".into(), Value::String(t.name.clone()));
            if let Some(d) = &t.description {
                entry.insert("description".into(), Value::String(d.clone()));
            }
            entry.insert("parameters".into(), t.parameters.clone());
            text.push_str(&Value::Object(entry).to_string());
            text.push('\n');
        }
        let call =
            r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<the tool's parameters>}}]}"#;
        match (&self.choice, &self.answer_schema) {
            (ToolChoice::Auto, None) => text.push_str(&format!(
                "\nAnswer with one JSON object: {call} to call tools, or {{\"response\": \"<your answer>\"}} to answer the user yourself."
            )),
            (ToolChoice::Auto, Some(schema)) => text.push_str(&format!(
                "\nAnswer with one JSON object: {call} to call tools, or {{\"response\": <your answer as a JSON value>}} to answer the user yourself; that answer follows this JSON Schema: {schema}"
            )),
            _ => text.push_str(&format!("\nAnswer with one JSON object that calls a tool: {call}")),
        }
        text
    }

    /// The JSON Schema of the answer (sent to the host as the output format).
    pub fn schema(&self) -> Value {
        let mut defs = Map::new();
        let calls: Vec<Value> = self
            .offered()
            .map(|t| {
                let arguments = hoist_definitions(&t.parameters, &t.name, &mut defs);
                json!({"type": "object", "properties": {
                    "name": {"const": t.name},
                    "arguments": arguments,
                }})
            })
            .collect();
        let call = match <[Value; 1]>::try_from(calls) {
            Ok([one]) => one,
            Err(calls) => json!({"anyOf": calls}),
        };
        // A named function is called once, as OpenAI does.
        let one = !self.parallel || matches!(self.choice, ToolChoice::Named(_));
        let max_calls = if one { 1 } else { MAX_CALLS };
        let list = json!({"type": "array", "items": call, "minItems": 1, "maxItems": max_calls});
        let with_calls = json!({"type": "object", "properties": {"tool_calls": list}});
        let mut schema = match self.choice {
            ToolChoice::Auto => {
                let answer = match &self.answer_schema {
                    Some(schema) => hoist_definitions(schema, ANSWER_DEFS, &mut defs),
                    None => json!({"type": "string"}),
                };
                json!({"anyOf": [
                    with_calls,
                    {"type": "object", "properties": {"response": answer}},
                ]})
            }
            _ => with_calls,
        };
        if !defs.is_empty() {
            schema["$defs"] = Value::Object(defs);
        }
        schema
    }
}

/// A tool's `parameters` with its own `$defs` / `definitions` moved into the answer
/// schema's `$defs` (under `<tool>.<name>`) and its `$ref`s rewritten to match, since
/// references resolve against the root of the whole answer schema.
fn hoist_definitions(parameters: &Value, tool: &str, defs: &mut Map<String, Value>) -> Value {
    fn rewrite(v: &Value, tool: &str) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| *k != "$defs" && *k != "definitions")
                    .map(|(k, v)| {
                        let v = match (k.as_str(), v.as_str()) {
                            ("$ref", Some(r)) => Value::String(rewrite_ref(r, tool)),
                            _ => rewrite(v, tool),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| rewrite(v, tool)).collect()),
            other => other.clone(),
        }
    }
    fn rewrite_ref(r: &str, tool: &str) -> String {
        for prefix in ["#/$defs/", "#/definitions/"] {
            if let Some(name) = r.strip_prefix(prefix) {
                return format!("#/$defs/{tool}.{name}");
            }
        }
        r.to_string()
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(own)) = parameters.get(key) {
            for (name, schema) in own {
                defs.insert(format!("{tool}.{name}"), rewrite(schema, tool));
            }
        }
    }
    rewrite(parameters, tool)
}

/// What the model answered: tool calls (name, arguments as JSON text) or text.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Calls(Vec<(String, String)>),
    Content(String),
}

/// Reads a complete answer; None when the text is not one (cut short by
/// `max_tokens`: the text is then returned as it is).
pub fn read_answer(text: &str) -> Option<Answer> {
    let v: Value = serde_json::from_str(text).ok()?;
    if let Some(calls) = v.get("tool_calls").and_then(Value::as_array) {
        let mut read: Vec<(String, String)> = Vec::with_capacity(calls.len());
        for c in calls {
            let name = c.get("name")?.as_str()?.to_string();
            let arguments = c.get("arguments").cloned().unwrap_or(json!({})).to_string();
            // The same call twice is one call (small models repeat themselves).
            if !read.iter().any(|r| r.0 == name && r.1 == arguments) {
                read.push((name, arguments));
            }
        }
        return Some(Answer::Calls(read));
    }
    // A JSON answer format makes the response a value of its own.
    match v.get("response")? {
        Value::String(s) => Some(Answer::Content(s.clone())),
        other => Some(Answer::Content(other.to_string())),
    }
}

/// An earlier assistant turn's calls as the model would have written them.
pub fn calls_as_text(calls: &[(String, String)]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(name, arguments)| {
            let arguments =
                serde_json::from_str(arguments).unwrap_or(Value::String(arguments.clone()));
            json!({"name": name, "arguments": arguments})
        })
        .collect();
    json!({ "tool_calls": calls }).to_string()
}

/// A tool message (a call's result) as the text of a user turn. A call of an earlier
/// turn is named as the model wrote it (function and arguments), not by its id: the
/// model never sees ids, and a random id in the prompt would make the next answer
/// depend on chance (and defeat the prefix cache across runs). An id the conversation
/// does not show is all there is to name the call by.
pub fn result_as_text(call: Option<(&str, &str)>, call_id: &str, content: &str) -> String {
    match call {
        Some((name, arguments)) => {
            let arguments = serde_json::from_str::<Value>(arguments)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| arguments.to_string());
            format!("Result of the tool call {name} {arguments}:\n{content}")
        }
        None => format!("Result of the tool call {call_id}:\n{content}"),
    }
}

/// A choice's answer as the response shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapedAnswer {
    /// None when the answer is tool calls (`content: null`).
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: &'static str,
}

impl ShapedAnswer {
    pub fn text(text: String, finish_reason: &'static str) -> Self {
        ShapedAnswer {
            content: Some(text),
            tool_calls: Vec::new(),
            finish_reason,
        }
    }
}

/// One call in a response (`index` only in streamed deltas).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments object as JSON text (OpenAI's form).
    pub arguments: String,
}

/// The text of a `{"response": "…` answer cut short (or complete), decoded.
fn partial_response(text: &str) -> Option<String> {
    let rest = text
        .trim_start()
        .strip_prefix('{')?
        .trim_start()
        .strip_prefix("\"response\"")?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    // A JSON answer (the request's answer format) cut short: as JSON mode's would be.
    let Some(rest) = rest.strip_prefix('"') else {
        return Some(rest.to_string());
    };
    let quoted = format!("\"{rest}");
    if let Some(Ok(s)) = serde_json::Deserializer::from_str(&quoted)
        .into_iter::<String>()
        .next()
    {
        return Some(s);
    }
    // Unterminated: close it, dropping what may be half an escape (`\u00e` at most).
    let mut end = rest.len();
    for _ in 0..7 {
        if let Ok(s) = serde_json::from_str::<String>(&format!("\"{}\"", &rest[..end])) {
            return Some(s);
        }
        end = rest[..end].char_indices().next_back()?.0;
    }
    None
}

/// A finished answer to a request with tools: its calls (finish reason
/// `tool_calls`), its `response` text, or, cut short, the raw text. Call ids come
/// from the response id, the choice and the call's place, so they are unique.
pub fn shape_answer(
    text: String,
    finish_reason: &'static str,
    response_id: &str,
    choice: u32,
    streamed: bool,
) -> ShapedAnswer {
    let answer = (finish_reason == "stop")
        .then(|| read_answer(&text))
        .flatten();
    match answer {
        Some(Answer::Calls(calls)) => {
            calls_answer(calls, "tool_calls", response_id, choice, streamed)
        }
        Some(Answer::Content(content)) => ShapedAnswer::text(content, finish_reason),
        // Cut short: the calls finished before the cut are the answer (the one being
        // written is dropped: its arguments would not parse); an answer in words is its
        // text so far, as free text would be; anything else is returned as it is.
        None => match finished_calls(&text) {
            Some(calls) => calls_answer(calls, finish_reason, response_id, choice, streamed),
            None => ShapedAnswer::text(partial_response(&text).unwrap_or(text), finish_reason),
        },
    }
}

/// The calls an answer cut short had finished, if it was writing calls and finished any.
fn finished_calls(text: &str) -> Option<Vec<(String, String)>> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    if !rest.starts_with("\"tool_calls\"") {
        return None;
    }
    let calls: Vec<(String, String)> = super::repeats::complete_calls(text)
        .into_iter()
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            let arguments = c.get("arguments").cloned().unwrap_or(json!({})).to_string();
            Some((name, arguments))
        })
        .collect();
    (!calls.is_empty()).then_some(calls)
}

/// Calls as the response shows them. Call ids come from the response id, the
/// choice and the call's place, so they are unique.
fn calls_answer(
    calls: Vec<(String, String)>,
    finish_reason: &'static str,
    response_id: &str,
    choice: u32,
    streamed: bool,
) -> ShapedAnswer {
    let random = response_id.rsplit(['-', '_']).next().unwrap_or(response_id);
    ShapedAnswer {
        content: None,
        tool_calls: calls
            .into_iter()
            .enumerate()
            .map(|(k, (name, arguments))| ToolCall {
                index: streamed.then_some(k as u32),
                id: format!("call_{}{choice}x{k}", &random[..random.len().min(16)]),
                kind: "function",
                function: FunctionCall { name, arguments },
            })
            .collect(),
        finish_reason,
    }
}
