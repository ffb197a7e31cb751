//! A streamed response (`"stream": true`): the Responses API's typed server-sent
//! events, `event: <type>` and `data: {"type": <type>, "sequence_number": n, …}`.
//! `response.created` and `response.in_progress` first; then for a text answer
//! `response.output_item.added` (the message), `response.content_part.added`, one
//! `response.output_text.delta` per piece of text as the host makes it,
//! `response.output_text.done`, `response.content_part.done` and
//! `response.output_item.done`; and last `response.completed` (or
//! `response.incomplete` when `max_output_tokens` cut it short) with the whole
//! response and its usage. An answer to a request with tools is read once complete
//! (it may turn out to be calls): each `function_call` item comes as
//! `output_item.added`, `function_call_arguments.delta` / `.done` and
//! `output_item.done`. A generation that fails sends an `error` event and stops.
//! There is no `[DONE]` line in this API.

use super::stored::Keeper;
use super::{output_text, Head};
use crate::host::{Event, GenerationStream};
use crate::http::{BodySink, Disconnected, StreamBody, StreamingResponse};
use crate::routes::generate::{finish_reason, logprobs, sse};
use serde_json::{json, Value};

pub fn response(
    head: Head,
    stream: Box<dyn GenerationStream>,
    provider: String,
    keeper: Option<Keeper>,
) -> StreamingResponse {
    StreamingResponse {
        status: 200,
        headers: sse::headers(provider),
        body: Box::new(ResponseEvents {
            head,
            stream,
            keeper,
        }),
    }
}

struct ResponseEvents {
    head: Head,
    stream: Box<dyn GenerationStream>,
    /// Stores the response once complete (`store`).
    keeper: Option<Keeper>,
}

impl StreamBody for ResponseEvents {
    fn write_to(self: Box<Self>, sink: &mut dyn BodySink) {
        let ResponseEvents {
            head,
            stream,
            keeper,
        } = *self;
        let mut events = Events { sink, sequence: 0 };
        // Disconnected: returning drops the stream, which cancels the generation.
        let _ = events.run(&head, stream, keeper);
    }
}

struct Events<'a> {
    sink: &'a mut dyn BodySink,
    sequence: u64,
}

impl Events<'_> {
    fn send(&mut self, kind: &str, mut data: Value) -> Result<(), Disconnected> {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        let mut frame = format!("event: {kind}\ndata: ").into_bytes();
        frame.extend(data.to_string().into_bytes());
        frame.extend(b"\n\n");
        self.sink.write(&frame)
    }

    /// The events of one response; with a keeper, the finished response is stored
    /// before the last event, which then says whether it was.
    fn run(
        &mut self,
        head: &Head,
        mut stream: Box<dyn GenerationStream>,
        keeper: Option<Keeper>,
    ) -> Result<(), Disconnected> {
        let started = head.shape(String::new(), "stop");
        let start = head.object(&started, &[], None);
        self.send("response.created", json!({"response": start}))?;
        self.send("response.in_progress", json!({"response": start}))?;
        let message_id = head.message_id();
        let stream_text = !head.tools;
        if stream_text {
            self.open_message(head)?;
        }
        let mut text = String::new();
        // Tokens whose text is held back (a piece of a character) join the next delta.
        let (mut all_logprobs, mut unsent) = (Vec::new(), 0);
        let end = loop {
            match stream.next() {
                Event::Chunk(c) => {
                    if head.logprobs {
                        all_logprobs.extend(c.logprobs);
                    }
                    if stream_text && !c.text.is_empty() {
                        let logprobs = logprobs::per_token(&all_logprobs[unsent..]);
                        unsent = all_logprobs.len();
                        self.send(
                            "response.output_text.delta",
                            json!({"item_id": message_id, "output_index": 0, "content_index": 0,
                                   "delta": c.text, "logprobs": logprobs}),
                        )?;
                    }
                    text.push_str(&c.text);
                }
                Event::Done(end) => break end,
            }
        };
        let finish = match finish_reason(&end) {
            Ok(reason) => reason,
            Err(e) => {
                return self.send(
                    "error",
                    json!({"code": e.code, "message": e.message, "param": e.param}),
                )
            }
        };
        let answer = head.shape(text, finish);
        let output = head.output(&answer, true, &all_logprobs);
        if stream_text || answer.tool_calls.is_empty() {
            if !stream_text {
                self.open_message(head)?;
                let text = answer.content.as_deref().unwrap_or_default();
                if !text.is_empty() {
                    self.send(
                        "response.output_text.delta",
                        json!({"item_id": message_id, "output_index": 0, "content_index": 0,
                               "delta": text, "logprobs": logprobs::per_token(&all_logprobs)}),
                    )?;
                }
            }
            let text = answer.content.as_deref().unwrap_or_default();
            let place = json!({"item_id": message_id, "output_index": 0, "content_index": 0});
            let mut done = place.clone();
            done["text"] = json!(text);
            done["logprobs"] = json!(logprobs::per_token(&all_logprobs));
            self.send("response.output_text.done", done)?;
            let mut part = place;
            part["part"] = output_text(text, &all_logprobs);
            self.send("response.content_part.done", part)?;
            self.send(
                "response.output_item.done",
                json!({"output_index": 0, "item": output[0]}),
            )?;
        } else {
            for (index, item) in output.iter().enumerate() {
                let mut added = item.clone();
                added["status"] = json!("in_progress");
                added["arguments"] = json!("");
                self.send(
                    "response.output_item.added",
                    json!({"output_index": index, "item": added}),
                )?;
                let place = json!({"item_id": item["id"], "output_index": index});
                let mut delta = place.clone();
                delta["delta"] = item["arguments"].clone();
                self.send("response.function_call_arguments.delta", delta)?;
                let mut done = place;
                done["arguments"] = item["arguments"].clone();
                self.send("response.function_call_arguments.done", done)?;
                self.send(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                )?;
            }
        }
        let cached = stream.cached_prompt_tokens();
        let mut response = head.object(&answer, &output, Some((end.usage, cached)));
        if let Some(keeper) = keeper {
            keeper.keep(&mut response);
        }
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.send(kind, json!({"response": response}))
    }

    /// The message item and its (empty) text part.
    fn open_message(&mut self, head: &Head) -> Result<(), Disconnected> {
        self.send(
            "response.output_item.added",
            json!({"output_index": 0, "item": head.message("", "in_progress", None)}),
        )?;
        self.send(
            "response.content_part.added",
            json!({"item_id": head.message_id(), "output_index": 0, "content_index": 0,
                   "part": output_text("", &[])}),
        )
    }
}
