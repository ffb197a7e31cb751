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
//! vLLM's extensions: with `return_token_ids` each choice's chunks carry their
//! tokens' ids (`token_ids`, held back with their text) and the prompt's ids come
//! once (chat: `prompt_token_ids` beside the first chunk's choices; completions: in
//! each choice's first chunk); with `stream_options.continuous_usage_stats` every
//! chunk carries the usage so far.
//!
//! If the client goes away, the next write fails, the body returns and drops the
//! generation streams, which cancels the generations on the host.

use super::{
    finish_reason, logprobs, Choice, Flavor, Meta, Shape, TextChoice, TextCompletion, UsageJson,
};
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
    shape: Shape,
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
            shape,
        }),
    }
}

struct SseBody {
    flavor: Flavor,
    meta: Meta,
    choices: Vec<Choice>,
    /// With `tool_calls`, answers are read as tool calls or text once complete, so
    /// their text is held until the end and sent as one piece.
    shape: Shape,
}

/// A choice being streamed: log probabilities of tokens whose text is still held
/// back wait for the next chunk that has text (or the finish chunk).
struct Running {
    choice: Choice,
    pending: Vec<TokenLogprobs>,
    /// Token ids whose text is still held back (`return_token_ids`).
    pending_ids: Vec<u32>,
    /// Completions with `return_token_ids`: the prompt's ids are still to be sent.
    prompt_ids_due: bool,
    /// Continuous usage: the choice's cached prompt tokens are in the usage so far.
    cached_counted: bool,
    /// Characters of token text sent so far (completions' `text_offset`).
    offset: usize,
    /// With tools: the answer so far.
    held: String,
}

/// What one chunk's choice carries, before it is shaped for the flavor.
enum Piece<'a> {
    /// Chat only: the assistant role, with empty content (`""`), or none (`null`)
    /// before tool calls, as OpenAI streams them.
    Role(Option<&'a str>),
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
            shape,
        } = self;
        let (with_logprobs, tool_calls) = (shape.logprobs, shape.tool_calls);
        // With include_usage every chunk but the last says `"usage":null`, or with
        // continuous usage what the choices have used so far.
        let mut so_far = UsageJson::default();
        for choice in choices.iter().filter(|c| c.counts_prompt) {
            so_far.add(
                crate::host::Usage {
                    prompt_tokens: choice.prompt.tokens,
                    completion_tokens: 0,
                },
                0,
                true,
            );
        }
        let usage_now = |so_far: &UsageJson| match (shape.include_usage, shape.continuous_usage) {
            (false, _) => None,
            (true, false) => Some(None),
            (true, true) => Some(Some(UsageJson {
                total_tokens: u64::from(so_far.prompt_tokens) + u64::from(so_far.completion_tokens),
                ..*so_far
            })),
        };
        let send = |sink: &mut dyn BodySink,
                    so_far: &UsageJson,
                    index: u32,
                    piece: Piece,
                    lp: Option<Value>,
                    ids: Ids| {
            sink.write(&frame(&chunk(
                flavor,
                &meta,
                Some((index, piece, lp, ids)),
                usage_now(so_far),
            )))
        };
        // The token ids a chunk carries, and the prompt's when they are due.
        let ids_of = |r: &mut Running| -> (Option<Vec<u32>>, Option<Vec<u32>>) {
            if !shape.token_ids {
                return (None, None);
            }
            let prompt = std::mem::take(&mut r.prompt_ids_due)
                .then(|| r.choice.prompt.token_ids.clone())
                .flatten();
            (Some(std::mem::take(&mut r.pending_ids)), prompt)
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
        let mut running: Vec<Running> = choices
            .into_iter()
            .map(|choice| Running {
                choice,
                pending: Vec::new(),
                pending_ids: Vec::new(),
                prompt_ids_due: flavor == Flavor::Text,
                cached_counted: false,
                offset: 0,
                held: String::new(),
            })
            .collect();
        // Chat's one prompt: its ids beside the first chunk's choice.
        let mut chat_prompt_ids = match (flavor, running.first()) {
            (Flavor::Chat, Some(r)) if shape.token_ids => r.choice.prompt.token_ids.clone(),
            _ => None,
        };
        // With tools the role waits for the answer: its content is null before calls.
        if flavor == Flavor::Chat && !tool_calls {
            for r in &running {
                let ids = Ids {
                    tokens: None,
                    prompt: chat_prompt_ids.take(),
                };
                send(
                    sink,
                    &so_far,
                    r.choice.index,
                    Piece::Role(Some("")),
                    None,
                    ids,
                )?;
            }
        }
        let mut usage = UsageJson::default();
        // `echo`: each choice's first chunk is its prompt.
        for r in &mut running {
            if let Some(echo) = r.choice.echo.clone() {
                let lp = with_logprobs.then(|| echo.logprobs(&[]));
                r.offset = echo.text.chars().count();
                let (tokens, prompt) = ids_of(r);
                let ids = Ids { tokens, prompt };
                send(
                    sink,
                    &so_far,
                    r.choice.index,
                    Piece::Text(&echo.text),
                    lp,
                    ids,
                )?;
            }
        }
        while !running.is_empty() {
            let mut still = Vec::with_capacity(running.len());
            for mut r in running {
                match r.choice.stream.next() {
                    Event::Chunk(c) => {
                        so_far.completion_tokens += c.tokens.len() as u32;
                        // The prefix cache was read before the first token.
                        if shape.continuous_usage && r.choice.counts_prompt && !r.cached_counted {
                            r.cached_counted = true;
                            so_far.prompt_tokens_details.cached_tokens +=
                                r.choice.stream.cached_prompt_tokens();
                        }
                        r.pending.extend(c.logprobs);
                        if shape.token_ids {
                            r.pending_ids.extend(c.tokens);
                        }
                        if tool_calls {
                            r.held.push_str(&c.text);
                        } else if !c.text.is_empty() {
                            let lp = take(&mut r);
                            let (tokens, prompt) = ids_of(&mut r);
                            let ids = Ids { tokens, prompt };
                            send(sink, &so_far, r.choice.index, Piece::Text(&c.text), lp, ids)?;
                        }
                        still.push(r);
                    }
                    Event::Done(end) => {
                        let index = r.choice.index;
                        let cached = r.choice.stream.cached_prompt_tokens();
                        let stop_reason = super::stop_reason(r.choice.stream.as_ref());
                        usage.add(end.usage, cached, r.choice.counts_prompt);
                        if r.choice.counts_prompt && !r.cached_counted {
                            so_far.prompt_tokens_details.cached_tokens += cached;
                        }
                        // The host's count is the one the last usage chunk gives.
                        so_far.completion_tokens =
                            so_far.completion_tokens.max(usage.completion_tokens);
                        let lp = if r.pending.is_empty() {
                            None
                        } else {
                            take(&mut r)
                        };
                        let (tokens, prompt) = ids_of(&mut r);
                        let held = std::mem::take(&mut r.held);
                        drop(r);
                        match finish_reason(&end) {
                            Ok(reason) if tool_calls => {
                                let answer =
                                    tools::shape_answer(held, reason, &meta.id, index, true);
                                let content = answer.tool_calls.is_empty().then_some("");
                                let role_ids = Ids {
                                    tokens: None,
                                    prompt: chat_prompt_ids.take(),
                                };
                                send(sink, &so_far, index, Piece::Role(content), None, role_ids)?;
                                let mut ids = Some(Ids { tokens, prompt });
                                match answer.content.as_deref() {
                                    Some("") | None => {}
                                    Some(text) => send(
                                        sink,
                                        &so_far,
                                        index,
                                        Piece::Text(text),
                                        lp.clone(),
                                        ids.take().unwrap_or_default(),
                                    )?,
                                }
                                if !answer.tool_calls.is_empty() {
                                    send(
                                        sink,
                                        &so_far,
                                        index,
                                        Piece::ToolCalls(&answer.tool_calls),
                                        lp,
                                        ids.take().unwrap_or_default(),
                                    )?;
                                }
                                let finish = Piece::Finish(answer.finish_reason, None);
                                let ids = ids.take().unwrap_or_default();
                                send(sink, &so_far, index, finish, None, ids)?
                            }
                            Ok(reason) => {
                                let finish = Piece::Finish(reason, stop_reason.as_ref());
                                let ids = Ids { tokens, prompt };
                                send(sink, &so_far, index, finish, lp, ids)?
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
        if shape.include_usage {
            sink.write(&frame(&chunk(flavor, &meta, None, Some(Some(usage)))))?;
        }
        sink.write(DONE)
    }
}

/// vLLM's token ids a chunk carries (`return_token_ids`): its own, and the prompt's
/// in the first chunk.
#[derive(Default)]
struct Ids {
    tokens: Option<Vec<u32>>,
    prompt: Option<Vec<u32>>,
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
    choice: Option<(u32, Piece, Option<Value>, Ids)>,
    usage: Option<Option<UsageJson>>,
) -> Vec<u8> {
    let (choice, ids) = match choice {
        Some((index, piece, lp, ids)) => (Some((index, piece, lp)), ids),
        None => (None, Ids::default()),
    };
    let json = match flavor {
        Flavor::Chat => {
            let choice = choice.map(|(index, piece, logprobs)| {
                let (delta, finish_reason, stop_reason) = match piece {
                    Piece::Role(content) => (
                        Delta {
                            role: Some("assistant"),
                            content,
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
                    token_ids: ids.tokens.as_deref(),
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
                prompt_token_ids: ids.prompt.as_deref(),
            })
        }
        Flavor::Text => {
            let parts = choice.map(|(index, piece, logprobs)| {
                let (text, finish_reason, stop_reason) = match piece {
                    Piece::Text(t) => (t, None, None),
                    Piece::Finish(r, stop) => ("", Some(r), stop),
                    Piece::Role(_) | Piece::ToolCalls(_) => ("", None, None),
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
                            token_ids: ids.tokens.as_deref(),
                            prompt_logprobs: None,
                            prompt_token_ids: ids.prompt.as_deref(),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_token_ids: Option<&'a [u32]>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<Value>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<&'a [u32]>,
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
