//! What chat and text completions send back: bodies, SSE framing and order,
//! finish reasons, errors before and during a stream.

use super::support::{chat, complete, done, gen_fake, hi, post, sse_data, text};
use super::*;
use crate::http::{BodySink, Disconnected, Reply};

/// The id of the first object a fake host makes (its random draws start over).
fn expected_id(prefix: &str) -> String {
    crate::routes::generate::new_id(prefix, &Fake::new())
}

#[test]
fn chat_non_streaming() {
    let h = gen_fake();
    let (r, v) = chat(&h, json!({"model": "smol", "messages": hi()}));
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(r.header("x-nnhost-provider"), Some("cpu-test"));
    let id = expected_id("chatcmpl-");
    assert_eq!(id.len(), "chatcmpl-".len() + 24);
    assert_eq!(
        v,
        json!({"id": id, "object": "chat.completion", "created": 1_700_000_123u64, "model": "smol",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                            "logprobs": null, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 5}},
               "system_fingerprint": null})
    );
    assert!(r
        .body
        .starts_with(format!(r#"{{"id":"{id}","object":"chat.completion","created""#).as_bytes()));
    assert_eq!(*h.log.borrow(), ["next", "next", "next", "next", "drop"]);
}

#[test]
fn completions_non_streaming() {
    let h = gen_fake();
    let (r, v) = complete(&h, json!({"model": "base", "prompt": "Once"}));
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(r.header("x-nnhost-provider"), Some("cpu-test"));
    assert_eq!(
        v,
        json!({"id": expected_id("cmpl-"), "object": "text_completion",
               "created": 1_700_000_123u64, "model": "base",
               "choices": [{"text": "Hello!", "index": 0, "logprobs": null, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                         "prompt_tokens_details": {"cached_tokens": 5}}})
    );
}

#[test]
fn finish_reasons() {
    for (reason, expected) in [
        (FinishReason::Stop, "stop"),
        (FinishReason::Length, "length"),
        (FinishReason::Cancelled, "length"),
    ] {
        let mut h = gen_fake();
        h.script = vec![text("a"), done(reason, None)];
        let (_, v) = chat(&h, json!({"model": "smol", "messages": hi()}));
        assert_eq!(v["choices"][0]["finish_reason"], expected, "{reason:?}");
        let (_, v) = complete(&h, json!({"model": "smol", "prompt": "x"}));
        assert_eq!(v["choices"][0]["finish_reason"], expected, "{reason:?}");
        let r = post(
            &h,
            "/v1/chat/completions",
            &json!({"model": "smol", "messages": hi(), "stream": true}),
        );
        let data = sse_data(&r.body);
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], expected);
    }
}

#[test]
fn generation_error_is_a_server_error() {
    let mut h = gen_fake();
    h.script = vec![
        text("partial"),
        done(
            FinishReason::Error,
            Some(HostError {
                code: ErrorCode::BackendError,
                message: "onnx run failed".into(),
                param: None,
            }),
        ),
    ];
    assert_error(
        &chat(&h, json!({"model": "smol", "messages": hi()})),
        500,
        None,
        "onnx run failed",
    );
    assert_error(
        &complete(&h, json!({"model": "base", "prompt": "x"})),
        500,
        None,
        "onnx run failed",
    );
    h.script = vec![done(FinishReason::Error, None)];
    assert_error(
        &chat(&h, json!({"model": "smol", "messages": hi()})),
        500,
        None,
        "no reason",
    );
}

/// The common prefix of every chunk of one streamed response.
fn chunk_head(id: &str, object: &str, model: &str) -> String {
    format!(r#"{{"id":"{id}","object":"{object}","created":1700000123,"model":"{model}""#)
}

#[test]
fn chat_stream_exact_body() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-nnhost-provider"), Some("cpu-test"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("content-length"), None);
    let head = chunk_head(&expected_id("chatcmpl-"), "chat.completion.chunk", "smol");
    let choice = |delta: &str, finish: &str| {
        format!(
            r#"data: {head},"system_fingerprint":null,"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
        ) + "\n\n"
    };
    let expected = [
        choice(r#"{"role":"assistant","content":""}"#, "null"),
        choice(r#"{"content":"Hel"}"#, "null"),
        choice(r#"{"content":"lo!"}"#, "null"),
        choice("{}", r#""stop""#),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected);
}

#[test]
fn chat_stream_with_usage() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 6);
    assert_eq!(data[5], "[DONE]");
    let chunks: Vec<Value> = data[..5]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for c in &chunks[..4] {
        assert_eq!(c["usage"], Value::Null, "{c}");
        assert!(c.as_object().unwrap().contains_key("usage"), "{c}");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["created"], 1_700_000_123u64);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        data[4],
        format!(
            r#"{},"system_fingerprint":null,"choices":[],"usage":{{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{{"cached_tokens":5}}}}}}"#,
            chunk_head(&expected_id("chatcmpl-"), "chat.completion.chunk", "smol")
        )
    );
}

#[test]
fn completions_stream_exact_body() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/completions",
        &json!({"model": "base", "prompt": "x", "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let head = chunk_head(&expected_id("cmpl-"), "text_completion", "base");
    let choice = |text: &str, finish: &str| {
        format!(
            r#"data: {head},"choices":[{{"text":"{text}","index":0,"logprobs":null,"finish_reason":{finish}}}],"usage":null}}"#
        ) + "\n\n"
    };
    let expected = [
        choice("Hel", "null"),
        choice("lo!", "null"),
        choice("", r#""stop""#),
        format!(
            r#"data: {head},"choices":[],"usage":{{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{{"cached_tokens":5}}}}}}"#
        ) + "\n\n",
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected);
}

#[test]
fn stream_error_mid_generation() {
    let mut h = gen_fake();
    h.script = vec![
        text("par"),
        done(
            FinishReason::Error,
            Some(HostError {
                code: ErrorCode::BackendError,
                message: "device lost".into(),
                param: None,
            }),
        ),
    ];
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200, "the head went out before the error");
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 4, "{data:?}");
    assert_eq!(
        data[2],
        r#"{"error":{"message":"device lost","type":"server_error","param":null,"code":null}}"#
    );
    assert_eq!(data[3], "[DONE]");
}

/// A sink that logs its writes into the fake's log (and can hang up).
struct LogSink {
    log: Rc<RefCell<Vec<String>>>,
    /// Fails the write with this index (0-based) and every later one.
    fail_at: Option<usize>,
    writes: usize,
}

impl BodySink for LogSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_at.is_some_and(|f| n >= f) {
            self.log.borrow_mut().push("write failed".into());
            return Err(Disconnected);
        }
        let v: Option<Value> = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.strip_prefix("data: "))
            .and_then(|s| serde_json::from_str(s.trim_end()).ok());
        let what = match v {
            None => "write [DONE]".to_string(),
            Some(v) => format!("write {}", v["choices"][0]["delta"]),
        };
        self.log.borrow_mut().push(what);
        Ok(())
    }
}

fn start_stream(h: &Fake) -> crate::http::StreamingResponse {
    let body = json!({"model": "smol", "messages": hi(), "stream": true}).to_string();
    let mut read = || Ok(body.clone().into_bytes());
    match crate::dispatch("POST", "/v1/chat/completions", h, &mut read) {
        Reply::Stream(s) => s,
        Reply::Full(r) => panic!("not streaming: {}", String::from_utf8_lossy(&r.body)),
    }
}

#[test]
fn stream_head_first_then_events_as_they_come() {
    let h = gen_fake();
    let s = start_stream(&h);
    // The head exists and nothing was generated yet: it goes out before generation.
    assert_eq!(s.status, 200);
    assert!(h.log.borrow().is_empty());
    let mut sink = LogSink {
        log: Rc::clone(&h.log),
        fail_at: None,
        writes: 0,
    };
    s.body.write_to(&mut sink);
    assert_eq!(
        *h.log.borrow(),
        [
            r#"write {"role":"assistant","content":""}"#,
            "next",
            r#"write {"content":"Hel"}"#,
            "next",
            "next",
            r#"write {"content":"lo!"}"#,
            "next",
            "drop",
            "write {}",
            "write [DONE]",
        ]
    );
}

#[test]
fn client_gone_cancels_generation() {
    let h = gen_fake();
    let s = start_stream(&h);
    let mut sink = LogSink {
        log: Rc::clone(&h.log),
        fail_at: Some(1),
        writes: 0,
    };
    s.body.write_to(&mut sink);
    assert_eq!(
        *h.log.borrow(),
        [
            r#"write {"role":"assistant","content":""}"#,
            "next",
            "write failed",
            "drop",
        ]
    );
}

#[test]
fn errors_before_streaming_are_json() {
    let mut h = gen_fake();
    h.gen_fail = Some(HostError {
        code: ErrorCode::ContextLengthExceeded,
        message: "prompt is 600 tokens; the context is 512".into(),
        param: None,
    });
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"model": "smol", "messages": hi(), "stream": true}),
            "messages",
        ),
        (
            "/v1/completions",
            json!({"model": "base", "prompt": "x", "stream": true}),
            "prompt",
        ),
    ] {
        let r = call(&h, "POST", path, &body.to_string());
        assert_error(&r, 400, Some(param), "600 tokens");
        assert_eq!(r.1["error"]["code"], "context_length_exceeded");
    }
    // A host param other than the prompt's is kept.
    h.gen_fail = Some(HostError {
        code: ErrorCode::ContextLengthExceeded,
        message: "too long".into(),
        param: Some("max_tokens".into()),
    });
    assert_error(
        &chat(&h, json!({"model": "smol", "messages": hi()})),
        400,
        Some("max_tokens"),
        "too long",
    );
    h.gen_fail = Some(HostError {
        code: ErrorCode::NotFound,
        message: "gone".into(),
        param: None,
    });
    let r = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "stream": true}),
    );
    assert_error(&r, 404, Some("model"), "gone");
    assert_eq!(r.1["error"]["code"], "model_not_found");
    h.gen_fail = Some(HostError {
        code: ErrorCode::Busy,
        message: "queue full".into(),
        param: None,
    });
    let r = complete(&h, json!({"model": "base", "prompt": "x"}));
    assert_error(&r, 429, None, "queue full");
    assert_eq!(r.0.header("retry-after"), Some("1"));
}

#[test]
fn ids_are_base62() {
    let id = expected_id("cmpl-");
    let tail = id.strip_prefix("cmpl-").unwrap();
    assert_eq!(tail.len(), 24);
    assert!(tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
}
