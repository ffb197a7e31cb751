//! vLLM's output fields: `prompt_logprobs` (the prompt scored, vLLM's shape with
//! ranks), `return_token_ids` (the prompt's and each choice's token ids, streamed
//! and not) and `stream_options.continuous_usage_stats` (every chunk's usage so
//! far).

use super::support::{chat, complete, done, gen_fake, hi, post, sse_data, token};
use super::*;

/// Three tokens; the second's text is held back and comes with the third's.
fn script() -> Vec<Event> {
    vec![
        token(5, "Hel", "Hel", -0.25),
        token(6, "l", "", -1.0),
        token(7, "o!", "lo!", -0.5),
        done(FinishReason::Stop, None),
    ]
}

fn chunks(r: &Response) -> Vec<Value> {
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The fake scores "Say" (first: null) and " hi" (id 6, rank 2, -0.5) with the
/// alternative " yo" (id 7, -0.25).
fn scored_hi() -> Value {
    json!([null, {
        "6": {"logprob": -0.5, "rank": 2, "decoded_token": " hi"},
        "7": {"logprob": -0.25, "rank": 1, "decoded_token": " yo"},
    }])
}

#[test]
fn chat_prompt_logprobs_come_at_the_top_in_vllms_shape() {
    let mut h = gen_fake();
    h.script = script();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "prompt_logprobs": 1}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(h.log.borrow()[0], "score top 1");
    assert_eq!(v["prompt_logprobs"], scored_hi());
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert!(v["choices"][0].get("prompt_logprobs").is_none());
    // 0: the prompt token's own entry only; `true` is 1.
    let (_, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "prompt_logprobs": 0}),
    );
    assert_eq!(
        v["prompt_logprobs"],
        json!([null, {"6": {"logprob": -0.5, "rank": 2, "decoded_token": " hi"}}])
    );
    let (_, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "prompt_logprobs": true}),
    );
    assert_eq!(v["prompt_logprobs"], scored_hi());
}

#[test]
fn without_prompt_logprobs_nothing_is_scored_or_added() {
    let h = gen_fake();
    for off in [json!(false), Value::Null] {
        let (r, v) = chat(
            &h,
            json!({"model": "smol", "messages": hi(), "prompt_logprobs": off}),
        );
        assert_eq!(r.status, 200, "{v}");
        assert!(v.get("prompt_logprobs").is_none(), "{v}");
        assert!(v.get("prompt_token_ids").is_none(), "{v}");
        assert!(v["choices"][0].get("token_ids").is_none(), "{v}");
    }
    assert!(!h.log.borrow().iter().any(|l| l.starts_with("score")));
}

#[test]
fn prompt_logprobs_refuses_streams_and_out_of_range_values() {
    let h = gen_fake();
    for (extra, why) in [
        (
            json!({"prompt_logprobs": 1, "stream": true}),
            "not available",
        ),
        (json!({"prompt_logprobs": 21}), "0 to 20"),
        (json!({"prompt_logprobs": -1}), "0 to 20"),
        (json!({"prompt_logprobs": "1"}), "integer"),
    ] {
        let mut body = json!({"model": "smol", "messages": hi()});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (r, v) = chat(&h, body);
        assert_eq!(r.status, 400, "{extra}: {v}");
        assert_eq!(v["error"]["param"], "prompt_logprobs");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
}

#[test]
fn completions_carry_prompt_logprobs_in_every_choice_and_echo_keeps_its_own_k() {
    let h = gen_fake();
    h.scripts.borrow_mut().extend([script(), script()]);
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "prompt_logprobs": 1, "n": 2,
               "echo": true, "logprobs": 0}),
    );
    assert_eq!(r.status, 200, "{v}");
    // Scored once, with the larger of the two counts.
    let log = h.log.borrow();
    assert_eq!(log.iter().filter(|l| l.starts_with("score")).count(), 1);
    assert_eq!(log[0], "score top 1");
    for choice in v["choices"].as_array().unwrap() {
        assert_eq!(choice["prompt_logprobs"], scored_hi());
    }
    // `echo`'s legacy arrays keep `logprobs` 0 alternatives.
    let echo = &v["choices"][0]["logprobs"]["top_logprobs"];
    assert_eq!(echo[1], json!({}), "{echo}");
}

#[test]
fn return_token_ids_gives_the_prompts_and_each_choices_ids() {
    let mut h = gen_fake();
    h.script = script();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "return_token_ids": true}),
    );
    assert_eq!(r.status, 200, "{v}");
    // The fake's prompt ids are the rendered prompt's bytes.
    let prompt = v["prompt_token_ids"].as_array().unwrap();
    let rendered: Vec<u8> = prompt.iter().map(|t| t.as_u64().unwrap() as u8).collect();
    assert!(String::from_utf8(rendered)
        .unwrap()
        .ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    assert_eq!(v["choices"][0]["token_ids"], json!([5, 6, 7]));

    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": [4, 2], "return_token_ids": true}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["choices"][0]["prompt_token_ids"], json!([4, 2]));
    assert_eq!(v["choices"][0]["token_ids"], json!([5, 6, 7]));
}

#[test]
fn streamed_token_ids_travel_with_their_text() {
    let mut h = gen_fake();
    h.script = script();
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true, "return_token_ids": true}),
    );
    let c = chunks(&r);
    assert!(c[0]["prompt_token_ids"].is_array(), "{}", c[0]);
    assert!(c[1].get("prompt_token_ids").is_none());
    let ids: Vec<(Value, Value)> = c[1..]
        .iter()
        .map(|c| {
            let choice = &c["choices"][0];
            (
                choice["delta"]["content"].clone(),
                choice["token_ids"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (json!("Hel"), json!([5])),
            (json!("lo!"), json!([6, 7])),
            (Value::Null, json!([])),
        ]
    );

    h.script = script();
    let r = post(
        &h,
        "/v1/completions",
        &json!({"model": "base", "prompt": [4, 2], "stream": true, "return_token_ids": true}),
    );
    let c = chunks(&r);
    assert_eq!(c[0]["choices"][0]["prompt_token_ids"], json!([4, 2]));
    assert_eq!(c[0]["choices"][0]["token_ids"], json!([5]));
    assert!(c[1]["choices"][0].get("prompt_token_ids").is_none());
    assert_eq!(c[1]["choices"][0]["token_ids"], json!([6, 7]));
}

#[test]
fn continuous_usage_counts_every_chunk() {
    let mut h = gen_fake();
    h.script = script();
    let r = post(
        &h,
        "/v1/completions",
        &json!({"model": "base", "prompt": [4, 2, 9], "stream": true,
                "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
    );
    let c = chunks(&r);
    let so_far: Vec<(u64, u64, u64)> = c
        .iter()
        .map(|c| {
            let u = &c["usage"];
            (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
                u["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    // "Hel", "lo!", the finish chunk, then the host's final usage.
    assert_eq!(so_far, [(3, 1, 4), (3, 3, 6), (3, 3, 6), (7, 3, 10)]);
    assert!(c[..3]
        .iter()
        .all(|c| c["choices"].as_array().unwrap().len() == 1));
    // The fake's prefix cache held 5 tokens, known from the first token on.
    assert_eq!(c[0]["usage"]["prompt_tokens_details"]["cached_tokens"], 5);

    // Without include_usage it is ignored, as at vLLM.
    h.script = script();
    let r = post(
        &h,
        "/v1/completions",
        &json!({"model": "base", "prompt": [4, 2, 9], "stream": true,
                "stream_options": {"continuous_usage_stats": true}}),
    );
    assert!(chunks(&r).iter().all(|c| c.get("usage").is_none()));
}

#[test]
fn tokens_as_ids_name_every_logprob_token_by_its_id() {
    let mut h = gen_fake();
    h.script = script();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "logprobs": true, "top_logprobs": 2,
               "return_tokens_as_token_ids": true}),
    );
    assert_eq!(r.status, 200, "{v}");
    let content = &v["choices"][0]["logprobs"]["content"];
    assert_eq!(content[1]["token"], "token_id:6");
    assert_eq!(content[1]["bytes"], json!(b"token_id:6".to_vec()));
    assert_eq!(content[1]["top_logprobs"][1]["token"], "token_id:99");
    // The text itself stays text.
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");

    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "echo": true, "logprobs": 1,
               "prompt_logprobs": 1, "return_tokens_as_token_ids": true}),
    );
    assert_eq!(r.status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(
        choice["logprobs"]["tokens"],
        json!([
            "token_id:5",
            "token_id:6",
            "token_id:5",
            "token_id:6",
            "token_id:7"
        ])
    );
    assert_eq!(
        choice["logprobs"]["top_logprobs"][1],
        json!({"token_id:7": -0.25})
    );
    assert_eq!(
        choice["prompt_logprobs"][1]["6"]["decoded_token"],
        "token_id:6"
    );
    assert_eq!(choice["text"], "Say hiHello!");
}
