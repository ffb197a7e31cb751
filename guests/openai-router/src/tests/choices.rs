//! `n` choices and several prompts: one host generation per choice, their order,
//! seeds, interleaved streaming and usage.

use super::support::{chat, complete, gen_fake, hi, post, sse_data};
use super::*;

#[test]
fn n_choices_run_together_and_count_the_prompt_once() {
    let h = gen_fake();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "n": 3, "seed": 41, "temperature": 0.8}),
    );
    assert_eq!(r.status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "Hello!");
        assert_eq!(c["finish_reason"], "stop");
    }
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 5}})
    );
    // All three started before any was read; each its own seed.
    let calls = h.gen_calls.borrow();
    let seeds: Vec<_> = calls.iter().map(|c| c.2.seed).collect();
    assert_eq!(seeds, [Some(41), Some(42), Some(43)]);
    assert_eq!(h.log.borrow().first().map(String::as_str), Some("next"));
    assert_eq!(h.log.borrow().iter().filter(|e| *e == "drop").count(), 3);
}

#[test]
fn several_prompts_each_get_n_choices_in_order() {
    let h = gen_fake();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": ["One", [5, 6]], "n": 2}),
    );
    assert_eq!(r.status, 200, "{v}");
    let indexes: Vec<_> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    let prompts: Vec<_> = h
        .gen_calls
        .borrow()
        .iter()
        .map(|c| format!("{:?}", c.1))
        .collect();
    let one = format!("{:?}", Prompt::Text("One".into()));
    let tokens = format!("{:?}", Prompt::Tokens(vec![5, 6]));
    assert_eq!(prompts, [one.clone(), one, tokens.clone(), tokens]);
    // Two prompts of 7 tokens, counted once each; four completions of 3.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 12, "total_tokens": 26, "prompt_tokens_details": {"cached_tokens": 10}})
    );
}

#[test]
fn streamed_choices_interleave_with_their_index() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true, "n": 2,
                "stream_options": {"include_usage": true}}),
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let seen: Vec<(u64, String)> = chunks
        .iter()
        .filter_map(|c| {
            let choice = c["choices"].get(0)?;
            let what = match (&choice["delta"]["role"], &choice["delta"]["content"]) {
                (Value::String(_), _) => "role".to_string(),
                (_, Value::String(t)) => t.clone(),
                _ => format!("finish:{}", choice["finish_reason"].as_str().unwrap()),
            };
            Some((choice["index"].as_u64().unwrap(), what))
        })
        .collect();
    let s = |i: u64, t: &str| (i, t.to_string());
    assert_eq!(
        seen,
        [
            s(0, "role"),
            s(1, "role"),
            s(0, "Hel"),
            s(1, "Hel"),
            s(0, "lo!"),
            s(1, "lo!"),
            s(0, "finish:stop"),
            s(1, "finish:stop"),
        ]
    );
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 5}})
    );
}

#[test]
fn a_prompt_of_several_that_is_too_long_is_named_by_its_index() {
    let mut h = gen_fake();
    h.gen_fail = Some(HostError {
        code: ErrorCode::ContextLengthExceeded,
        message: "too long".into(),
        param: None,
    });
    let (r, v) = complete(&h, json!({"model": "base", "prompt": ["a", "b"]}));
    assert_eq!(r.status, 400, "{v}");
    assert_eq!(v["error"]["param"], "prompt[0]");
    let (_, v) = complete(&h, json!({"model": "base", "prompt": "a"}));
    assert_eq!(v["error"]["param"], "prompt");
}
