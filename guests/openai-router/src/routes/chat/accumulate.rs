//! A streamed chat completion stored as it goes out: [`StoringBody`] passes each
//! server-sent event to the client and adds its chunk to an [`Accumulator`], which
//! rebuilds the `chat.completion` object the same request without `stream` would
//! have returned (as the SDK's stream helpers do). The completion is stored just
//! before `[DONE]`, so a client that reads it back after the stream finds it; a
//! stream that fails or whose client leaves is not stored.

use super::stored::Keeper;
use crate::http::{BodySink, Disconnected, StreamBody};
use crate::routes::generate::sse::{frame, DONE};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The parts of a completion that its chunks carry.
#[derive(Debug, Default)]
pub struct Accumulator {
    head: Option<(Value, Value, Value)>,
    choices: BTreeMap<u64, Choice>,
    usage: Value,
}

#[derive(Debug, Default)]
struct Choice {
    content: String,
    tool_calls: Vec<Value>,
    /// `None` until a chunk carries log probabilities (they were not asked for).
    logprobs: Option<Vec<Value>>,
    finish_reason: Value,
}

impl Accumulator {
    pub fn add(&mut self, chunk: &Value) {
        if self.head.is_none() {
            self.head = Some((
                chunk["id"].clone(),
                chunk["created"].clone(),
                chunk["model"].clone(),
            ));
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        for c in chunk["choices"].as_array().into_iter().flatten() {
            let choice = self
                .choices
                .entry(c["index"].as_u64().unwrap_or_default())
                .or_default();
            let delta = &c["delta"];
            if let Some(text) = delta["content"].as_str() {
                choice.content.push_str(text);
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                choice.tool_calls.extend(calls.iter().map(|call| {
                    let mut call = call.clone();
                    // Streamed calls carry their place; the whole message's do not.
                    if let Some(fields) = call.as_object_mut() {
                        fields.remove("index");
                    }
                    call
                }));
            }
            if let Some(entries) = c["logprobs"]["content"].as_array() {
                choice
                    .logprobs
                    .get_or_insert_with(Vec::new)
                    .extend(entries.iter().cloned());
            }
            if !c["finish_reason"].is_null() {
                choice.finish_reason = c["finish_reason"].clone();
            }
        }
    }

    /// The `chat.completion` the chunks add up to.
    pub fn completion(self) -> Value {
        let (id, created, model) = self.head.unwrap_or_default();
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let mut message = json!({"role": "assistant", "content": c.content});
                if !c.tool_calls.is_empty() {
                    message["content"] = Value::Null;
                    message["tool_calls"] = Value::Array(c.tool_calls);
                }
                let logprobs = c.logprobs.map_or(
                    Value::Null,
                    |content| json!({"content": content, "refusal": null}),
                );
                json!({"index": index, "message": message, "logprobs": logprobs,
                       "finish_reason": c.finish_reason})
            })
            .collect();
        json!({"id": id, "object": "chat.completion", "created": created, "model": model,
               "choices": choices, "usage": self.usage, "system_fingerprint": null})
    }
}

/// A chat completion's event stream, passed through and stored at its end.
pub struct StoringBody {
    inner: Box<dyn StreamBody>,
    keeper: Keeper,
    /// The client did not ask for the usage chunk: it is taken out (and each
    /// chunk's `"usage": null`), the stored completion keeps it.
    strip_usage: bool,
}

impl StoringBody {
    pub fn new(inner: Box<dyn StreamBody>, keeper: Keeper, strip_usage: bool) -> Self {
        StoringBody {
            inner,
            keeper,
            strip_usage,
        }
    }
}

impl StreamBody for StoringBody {
    fn write_to(self: Box<Self>, sink: &mut dyn BodySink) {
        let StoringBody {
            inner,
            keeper,
            strip_usage,
        } = *self;
        let mut tee = Tee {
            sink,
            keeper: Some(keeper),
            chunks: Accumulator::default(),
            strip_usage,
        };
        inner.write_to(&mut tee);
    }
}

struct Tee<'a> {
    sink: &'a mut dyn BodySink,
    /// Taken when the completion is stored, or dropped when the stream failed.
    keeper: Option<Keeper>,
    chunks: Accumulator,
    strip_usage: bool,
}

impl BodySink for Tee<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
        let mut out = Vec::with_capacity(bytes.len());
        for event in events(bytes) {
            out.extend(self.pass(event));
        }
        if out.is_empty() {
            return Ok(());
        }
        self.sink.write(&out)
    }
}

/// The events in `bytes`, each with its closing blank line (a write is whole events).
fn events(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 2);
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(event)
    })
}

impl Tee<'_> {
    /// One event (`data: …\n\n`) as the client gets it, after noting its chunk.
    fn pass(&mut self, event: &[u8]) -> Vec<u8> {
        if event == DONE {
            if let Some(keeper) = self.keeper.take() {
                keeper.keep(std::mem::take(&mut self.chunks).completion());
            }
            return event.to_vec();
        }
        let parsed = event
            .strip_prefix(b"data: ")
            .and_then(|json| serde_json::from_slice::<Value>(json.trim_ascii_end()).ok());
        let Some(mut chunk) = parsed else {
            return event.to_vec();
        };
        if chunk.get("error").is_some() {
            self.keeper = None;
            return event.to_vec();
        }
        self.chunks.add(&chunk);
        if !self.strip_usage {
            return event.to_vec();
        }
        if chunk["choices"].as_array().is_some_and(Vec::is_empty) {
            return Vec::new();
        }
        if let Some(fields) = chunk.as_object_mut() {
            fields.remove("usage");
        }
        frame(chunk.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_add_up_to_the_completion() {
        let mut acc = Accumulator::default();
        let head = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "model": "m"});
        let with = |choices: Value, usage: Value| {
            let mut c = head.clone();
            c["choices"] = choices;
            c["usage"] = usage;
            c
        };
        for chunk in [
            with(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null},
                        {"index": 1, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"token": "Hel"}]}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 1, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "logprobs": null, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [{"token": "lo"}]}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
                Value::Null,
            ),
            with(
                json!([{"index": 1, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]),
                Value::Null,
            ),
            with(
                json!([]),
                json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
            ),
        ] {
            acc.add(&chunk);
        }
        let c = acc.completion();
        assert_eq!(
            (c["id"].as_str(), c["object"].as_str()),
            (Some("chatcmpl-1"), Some("chat.completion"))
        );
        assert_eq!(
            c["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(
            c["choices"][0]["logprobs"]["content"],
            json!([{"token": "Hel"}, {"token": "lo"}])
        );
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["choices"][1]["message"]["content"], Value::Null);
        assert_eq!(
            c["choices"][1]["message"]["tool_calls"][0],
            json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}})
        );
        assert_eq!(c["choices"][1]["logprobs"], Value::Null);
        assert_eq!(c["usage"]["total_tokens"], 7);
    }
}
