//! Streaming (`"stream": true`): server-sent events written as the host makes
//! tokens. The response head goes out first (by [`crate::http::send_streaming`]);
//! then, for chat, a first chunk with `delta {"role":"assistant","content":""}`,
//! one chunk per non-empty text chunk, a last chunk with an empty delta (chat) or
//! empty text (completions) and the `finish_reason`, with
//! `stream_options.include_usage` a chunk with `"choices":[]` and `usage` (every
//! earlier chunk then carries `"usage":null`), and `data: [DONE]`. A generation
//! that fails sends `data: {"error":{…}}` and `data: [DONE]` instead of the last
//! chunks. All chunks share one id and `created`. With several choices (`n`, or
//! several prompts) each chunk carries one choice's `index`: the role chunks of
//! all choices first, then their text interleaved as it comes, each choice's
//! finish chunk when it ends, and one usage chunk for all of them. With tools, a
//! choice's answer is read once complete: its text or its `tool_calls` come in one
//! chunk before the finish chunk.
//!
//! If the client goes away, the next write fails, the body returns and drops the
//! generation streams, which cancels the generations on the host.

use super::{finish_reason, logprobs, Choice, Flavor, Meta, TextChoice, TextCompletion, UsageJson};
use crate::host::{Event, TokenLogprobs};
use crate::http::{BodySink, Disconnected, StreamBody, StreamingResponse};
use crate::routes::chat::tools::{self, ToolCall};
use serde::Serialize;
use serde_json::Value;

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The streaming response for started generations (one per choice).
pub fn response(
    flavor: Flavor,
    meta: Meta,
    choices: Vec<Choice>,
    include_usage: bool,
    with_logprobs: bool,
    tool_calls: bool,
) -> StreamingResponse {
    let provider = choices
        .first()
        .map(|c| c.stream.provider())
        .unwrap_or_default();
    StreamingResponse {
        status: 200,
        headers: headers(provider),
        body: Box::new(SseBody {
            flavor,
            meta,
            choices,
            include_usage,
            with_logprobs,
            tool_calls,
        }),
    }
}

struct SseBody {
    flavor: Flavor,
    meta: Meta,
    choices: Vec<Choice>,
    include_usage: bool,
    with_logprobs: bool,
    /// Answers are read as tool calls or text once complete, so their text is held
    /// until the end and sent as one piece.
    tool_calls: bool,
}

/// A choice being streamed: log probabilities of tokens whose text is still held
/// back wait for the next chunk that has text (or the finish chunk).
struct Running {
    choice: Choice,
    pending: Vec<TokenLogprobs>,
    /// Characters of token text sent so far (completions' `text_offset`).
    offset: usize,
    /// With tools: the answer so far.
    held: String,
}

/// What one chunk's choice carries, before it is shaped for the flavor.
enum Piece<'a> {
    /// Chat only: the assistant role, empty content.
    Role,
    Text(&'a str),
    /// Chat with tools: the answer's calls.
    ToolCalls(&'a [ToolCall]),
    /// The finish reason, and vLLM's `stop_reason` when the request's own stop ended it.
    Finish(&'static str, Option<&'a Value>),
}

impl StreamBody for SseBody {
    fn write_to(self: Box<Self>, sink: &mut dyn BodySink) {
        // Disconnected: nothing more to do; returning drops (cancels) the streams.
        let _ = self.run(sink);
    }
}

impl SseBody {
    /// Several choices are read in turn, one chunk of each: they decode together
    /// on the host, so each `next` finds its chunk about ready.
    fn run(self, sink: &mut dyn BodySink) -> Result<(), Disconnected> {
        let SseBody {
            flavor,
            meta,
            choices,
            include_usage,
            with_logprobs,
            tool_calls,
        } = self;
        // With include_usage every chunk but the last says `"usage":null`.
        let usage_null = include_usage.then_some(None);
        let send = |sink: &mut dyn BodySink, index: u32, piece: Piece, lp: Option<Value>| {
            sink.write(&frame(&chunk(
                flavor,
                &meta,
                Some((index, piece, lp)),
                usage_null,
            )))
        };
        // The log probabilities a chunk carries: what is pending, in its flavor's shape.
        let take = |r: &mut Running| -> Option<Value> {
            if !with_logprobs {
                return None;
            }
            let entries = std::mem::take(&mut r.pending);
            Some(match flavor {
                Flavor::Chat => logprobs::chat(&entries),
                Flavor::Text => {
                    let lp = logprobs::completions(&entries, r.offset);
                    r.offset += logprobs::chars(&entries);
                    lp
                }
            })
        };
        if flavor == Flavor::Chat {
            for choice in &choices {
                send(sink, choice.index, Piece::Role, None)?;
            }
        }
        let mut usage = UsageJson::default();
        let mut running: Vec<Running> = choices
            .into_iter()
            .map(|choice| Running {
                choice,
                pending: Vec::new(),
                offset: 0,
                held: String::new(),
            })
            .collect();
        // `echo`: each choice's first chunk is its prompt.
        for r in &mut running {
            if let Some(echo) = &r.choice.echo {
                let lp = with_logprobs.then(|| echo.logprobs(&[]));
                r.offset = echo.text.chars().count();
                send(sink, r.choice.index, Piece::Text(&echo.text), lp)?;
            }
        }
        while !running.is_empty() {
            let mut still = Vec::with_capacity(running.len());
            for mut r in running {
                match r.choice.stream.next() {
                    Event::Chunk(c) => {
                        r.pending.extend(c.logprobs);
                        if tool_calls {
                            r.held.push_str(&c.text);
                        } else if !c.text.is_empty() {
                            let lp = take(&mut r);
                            send(sink, r.choice.index, Piece::Text(&c.text), lp)?;
                        }
                        still.push(r);
                    }
                    Event::Done(end) => {
                        let index = r.choice.index;
                        let cached = r.choice.stream.cached_prompt_tokens();
                        let stop_reason = super::stop_reason(r.choice.stream.as_ref());
                        usage.add(end.usage, cached, r.choice.counts_prompt);
                        let lp = if r.pending.is_empty() {
                            None
                        } else {
                            take(&mut r)
                        };
                        let held = std::mem::take(&mut r.held);
                        drop(r);
                        match finish_reason(&end) {
                            Ok(reason) if tool_calls => {
                                let answer =
                                    tools::shape_answer(held, reason, &meta.id, index, true);
                                match answer.content.as_deref() {
                                    Some("") | None => {}
                                    Some(text) => send(sink, index, Piece::Text(text), lp.clone())?,
                                }
                                if !answer.tool_calls.is_empty() {
                                    send(sink, index, Piece::ToolCalls(&answer.tool_calls), lp)?;
                                }
                                send(sink, index, Piece::Finish(answer.finish_reason, None), None)?
                            }
                            Ok(reason) => {
                                send(sink, index, Piece::Finish(reason, stop_reason.as_ref()), lp)?
                            }
                            Err(e) => {
                                // The other choices are dropped (cancelled) on return.
                                sink.write(&frame(&e.to_json()))?;
                                return sink.write(DONE);
                            }
                        }
                    }
                }
            }
            running = still;
        }
        if include_usage {
            sink.write(&frame(&chunk(flavor, &meta, None, Some(Some(usage)))))?;
        }
        sink.write(DONE)
    }
}

/// The head of an event stream: its type, no caching, and the provider.
pub fn headers(provider: String) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "text/event-stream".into()),
        ("cache-control".into(), "no-cache".into()),
        ("x-nnhost-provider".into(), provider),
    ]
}

/// `data: {json}\n\n`
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// One chunk object's JSON: `choices` holds `choice` (or nothing), `usage` is
/// absent (`None`), `null` or the object.
fn chunk(
    flavor: Flavor,
    meta: &Meta,
    choice: Option<(u32, Piece, Option<Value>)>,
    usage: Option<Option<UsageJson>>,
) -> Vec<u8> {
    let json = match flavor {
        Flavor::Chat => {
            let choice = choice.map(|(index, piece, logprobs)| {
                let (delta, finish_reason, stop_reason) = match piece {
                    Piece::Role => (
                        Delta {
                            role: Some("assistant"),
                            content: Some(""),
                            tool_calls: None,
                        },
                        None,
                        None,
                    ),
                    Piece::Text(t) => (
                        Delta {
                            role: None,
                            content: Some(t),
                            tool_calls: None,
                        },
                        None,
                        None,
                    ),
                    Piece::ToolCalls(calls) => (
                        Delta {
                            role: None,
                            content: None,
                            tool_calls: Some(calls),
                        },
                        None,
                        None,
                    ),
                    Piece::Finish(r, stop) => (
                        Delta {
                            role: None,
                            content: None,
                            tool_calls: None,
                        },
                        Some(r),
                        stop,
                    ),
                };
                ChatChunkChoice {
                    index,
                    delta,
                    logprobs,
                    finish_reason,
                    stop_reason,
                }
            });
            serde_json::to_vec(&ChatChunk {
                id: &meta.id,
                object: "chat.completion.chunk",
                created: meta.created,
                model: &meta.model,
                system_fingerprint: None,
                choices: choice.as_slice(),
                usage,
            })
        }
        Flavor::Text => {
            let parts = choice.map(|(index, piece, logprobs)| {
                let (text, finish_reason, stop_reason) = match piece {
                    Piece::Text(t) => (t, None, None),
                    Piece::Finish(r, stop) => ("", Some(r), stop),
                    Piece::Role | Piece::ToolCalls(_) => ("", None, None),
                };
                (index, text, finish_reason, logprobs, stop_reason)
            });
            let choice =
                parts
                    .as_ref()
                    .map(
                        |(index, text, finish_reason, logprobs, stop_reason)| TextChoice {
                            text,
                            index: *index,
                            logprobs: logprobs.as_ref(),
                            finish_reason: *finish_reason,
                            stop_reason: *stop_reason,
                        },
                    );
            serde_json::to_vec(&TextCompletion {
                id: &meta.id,
                object: "text_completion",
                created: meta.created,
                model: &meta.model,
                choices: choice.as_slice(),
                usage,
            })
        }
    };
    // Serializing these cannot fail (string keys; a non-finite float becomes null).
    json.unwrap_or_default()
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<&'static str>,
    choices: &'a [ChatChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageJson>>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<Value>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a Value>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCall]>,
}
