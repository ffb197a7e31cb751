//! `POST /v1/responses`: OpenAI's Responses API over the chat path. The request's
//! `instructions` and `input` items become a chat conversation ([`request`]), the
//! model's chat template renders it, and the answer comes back as a `response`
//! object whose `output` holds a `message` item or `function_call` items, whole or
//! streamed as the Responses API's typed events ([`stream`]). Responses are stored
//! unless `store` is false, and continue with `previous_response_id` ([`stored`]).

pub mod fit;
pub mod request;
pub mod stored;
pub mod stream;

use super::chat::repeats::StopRepeats;
use super::chat::tools::{self, ShapedAnswer};
use super::chat::{self};
use super::conversations;
use super::generate::{self, logprobs, Flavor};
use crate::errors::ApiError;
use crate::host::{Host, Prompt, TokenLogprobs, Usage};
use crate::http::{Reply, Response};
use request::Echo;
use serde_json::{json, Value};

pub fn handle(host: &dyn Host, body: &[u8]) -> Result<Reply, ApiError> {
    let mut req = request::parse_request(body)?;
    let store = host.store();
    let earlier = match (&req.previous_response_id, &req.conversation) {
        (Some(id), _) => {
            stored::load(&*store, id)
                .ok_or_else(|| stored::not_found(id, Some("previous_response_id")))?
                .items
        }
        (None, Some(id)) => conversations::items_for_response(&*store, id)?,
        (None, None) => Vec::new(),
    };
    if !earlier.is_empty() {
        req.messages = request::conversation(req.instructions.as_deref(), &earlier, &req.input)?;
    }
    let keeper = (req.store || req.conversation.is_some()).then(|| {
        stored::Keeper::new(
            store,
            earlier,
            &req.input,
            req.store,
            req.conversation.clone(),
        )
    });
    let tools = req.tools.is_some();
    let prepared = fit::prepare(
        host,
        &req.model,
        req.messages,
        req.sampling,
        req.tools.as_ref(),
        "/v1/responses",
        req.truncation_auto,
    )?;
    let options = prepared.sampling.options(false, 0);
    let prompt = Prompt::Text(prepared.prompt);
    let stream = host
        .generate(
            &prepared.info.id,
            &prompt,
            &options,
            &prepared.sampling.extras(),
        )
        .map_err(|e| request_error(generate::host_error(e, Flavor::Chat, false, 0), tools))?;
    let stream = if tools {
        StopRepeats::wrap(stream)
    } else {
        stream
    };
    let head = Head {
        id: generate::new_id("resp_", host),
        created_at: host.unix_time(),
        model: prepared.info.id.clone(),
        echo: req.echo,
        tools,
        logprobs: prepared.sampling.logprobs.is_some(),
    };
    let provider = stream.provider();
    if prepared.sampling.stream {
        return Ok(Reply::Stream(stream::response(
            head, stream, provider, keeper,
        )));
    }
    let drained = generate::drain(stream);
    let finish = generate::finish_reason(&drained.end)?;
    let answer = head.shape(drained.text, finish);
    let mut body = head.object(
        &answer,
        &head.output(&answer, true, &drained.logprobs),
        Some((drained.end.usage, drained.cached_prompt_tokens)),
    );
    if let Some(keeper) = keeper {
        keeper.keep(&mut body);
    }
    Ok(Reply::Full(
        Response::json(200, body.to_string().into_bytes())
            .with_header("x-nnhost-provider", &provider),
    ))
}

/// The chat path's error names its fields; here they are `input`, `tools` and
/// `text.format`.
fn request_error(mut e: ApiError, tools: bool) -> ApiError {
    match e.param.as_deref() {
        Some("messages") => e.param = Some("input".into()),
        Some("max_tokens") => e.param = Some("max_output_tokens".into()),
        Some("response_format") if !tools => {
            e.param = Some("text.format".into());
            e.message = e.message.replace("response_format", "text.format");
        }
        _ => return chat::tools_error(e, tools, "tools", "text.format"),
    }
    e
}

/// What every object of one response repeats.
pub struct Head {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub echo: Echo,
    pub tools: bool,
    /// The answer's tokens' log probabilities were asked for.
    pub logprobs: bool,
}

impl Head {
    /// The answer as text or tool calls (ids from the response id).
    pub fn shape(&self, text: String, finish: &'static str) -> ShapedAnswer {
        if self.tools {
            tools::shape_answer(text, finish, &self.id, 0, false)
        } else {
            ShapedAnswer::text(text, finish)
        }
    }

    fn suffix(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    /// The id of the message item.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.suffix())
    }

    /// The output items: the calls, or one message (`done`: with its final status;
    /// `logprobs`: its tokens', when asked for).
    pub fn output(
        &self,
        answer: &ShapedAnswer,
        done: bool,
        logprobs: &[TokenLogprobs],
    ) -> Vec<Value> {
        if !answer.tool_calls.is_empty() {
            return answer
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": format!("fc_{}", c.id.trim_start_matches("call_")), "type": "function_call",
                           "status": "completed", "call_id": c.id, "name": c.function.name,
                           "arguments": c.function.arguments})
                })
                .collect();
        }
        let text = answer.content.as_deref().unwrap_or_default();
        let status = if done { status(answer) } else { "in_progress" };
        let logprobs = if self.logprobs { logprobs } else { &[] };
        vec![self.message(text, status, done.then_some(logprobs))]
    }

    /// A message item; with `logprobs` (empty when not asked for) it holds its
    /// text part, else it has none yet.
    pub fn message(&self, text: &str, status: &str, logprobs: Option<&[TokenLogprobs]>) -> Value {
        let content = match logprobs {
            Some(logprobs) => json!([output_text(text, logprobs)]),
            None => json!([]),
        };
        json!({"id": self.message_id(), "type": "message", "status": status, "role": "assistant",
               "content": content})
    }

    /// The `response` object. Without `usage` it is in progress (a streamed start).
    /// `usage`: the generation's, and how many of its prompt tokens were cached.
    pub fn object(
        &self,
        answer: &ShapedAnswer,
        output: &[Value],
        usage: Option<(Usage, u32)>,
    ) -> Value {
        let e = &self.echo;
        let (state, incomplete) = match usage {
            None => ("in_progress", Value::Null),
            Some(_) if status(answer) == "incomplete" => {
                ("incomplete", json!({"reason": "max_output_tokens"}))
            }
            Some(_) => ("completed", Value::Null),
        };
        let usage = usage.map_or(Value::Null, |(u, cached)| {
            json!({"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": cached.min(u.prompt_tokens)},
                   "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": u.prompt_tokens + u.completion_tokens})
        });
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": state,
            "error": null, "incomplete_details": incomplete, "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens, "model": self.model, "output": output,
            "parallel_tool_calls": e.parallel_tool_calls, "previous_response_id": e.previous_response_id,
            "reasoning": {"effort": null, "summary": null}, "store": e.store,
            "temperature": e.temperature, "text": {"format": e.text_format},
            "tool_choice": e.tool_choice, "tools": e.tools, "top_logprobs": e.top_logprobs,
            "top_p": e.top_p,
            "truncation": e.truncation, "usage": usage, "user": e.user, "metadata": e.metadata,
            "conversation": e.conversation,
        })
    }
}

/// A text part; `logprobs` are its tokens' (OpenAI sends `[]` when not asked for).
pub fn output_text(text: &str, logprobs: &[TokenLogprobs]) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [],
           "logprobs": logprobs::per_token(logprobs)})
}

/// `incomplete` when `max_output_tokens` (or the context) cut the answer short.
fn status(answer: &ShapedAnswer) -> &'static str {
    if answer.finish_reason == "length" {
        "incomplete"
    } else {
        "completed"
    }
}
