//! `/v1/completions` with `echo`: the prompt starts each choice's text; with
//! `logprobs` the host scores it and its tokens lead the legacy arrays. Also
//! `best_of`, the other field that ranks text by its log probabilities.

use super::support::{complete, done, gen_fake, post, sse_data, token};
use super::*;

fn scripted() -> Fake {
    let mut h = gen_fake();
    h.script = vec![
        token(1, " there", " there", -1.0),
        done(FinishReason::Length, None),
    ];
    h
}

#[test]
fn echo_prepends_the_prompt_without_scoring_it() {
    let h = gen_fake();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "echo": true}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], "Say hiHello!");
    assert!(v["choices"][0]["logprobs"].is_null());
    assert!(!h.log.borrow().iter().any(|l| l.starts_with("score")));
    // A token-id prompt is echoed as its decoded text.
    let (_, v) = complete(&h, json!({"model": "base", "prompt": [4, 2], "echo": true}));
    assert_eq!(v["choices"][0]["text"], "<4><2>Hello!");
}

#[test]
fn echo_with_logprobs_puts_the_scored_prompt_first() {
    let h = scripted();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "echo": true, "logprobs": 1}),
    );
    assert_eq!(r.status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], "Say hi there");
    let lp = &choice["logprobs"];
    assert_eq!(lp["tokens"], json!(["Say", " hi", " there"]));
    assert_eq!(lp["token_logprobs"], json!([null, -0.5, -1.0]));
    assert_eq!(
        lp["top_logprobs"][0],
        Value::Null,
        "the first token has no score"
    );
    assert_eq!(lp["top_logprobs"][1], json!({" yo": -0.25}));
    assert_eq!(lp["text_offset"], json!([0, 3, 6]));
    assert_eq!(h.log.borrow()[0], "score top 1");
}

#[test]
fn max_tokens_zero_scores_the_prompt_alone() {
    let mut h = gen_fake();
    h.script = vec![done(FinishReason::Length, None)];
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "echo": true, "logprobs": 0, "max_tokens": 0}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], "Say hi");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"],
        json!([null, -0.5])
    );
    assert_eq!(h.gen_calls.borrow()[0].2.max_tokens, Some(0));
}

#[test]
fn the_prompt_is_scored_once_for_several_choices() {
    let h = scripted();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "Say hi", "echo": true, "logprobs": 0, "n": 3}),
    );
    assert_eq!(r.status, 200, "{v}");
    let scored = h
        .log
        .borrow()
        .iter()
        .filter(|l| l.starts_with("score"))
        .count();
    assert_eq!(scored, 1);
    for choice in v["choices"].as_array().unwrap() {
        assert_eq!(
            choice["logprobs"]["token_logprobs"],
            json!([null, -0.5, -1.0])
        );
    }
}

#[test]
fn a_streamed_echo_sends_the_prompt_first() {
    let h = scripted();
    let body = json!({"model": "base", "prompt": "Say hi", "echo": true, "logprobs": 1,
                      "stream": true});
    let r = post(&h, "/v1/completions", &body);
    assert_eq!(r.status, 200);
    let events: Vec<Value> = sse_data(&r.body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let first = &events[0]["choices"][0];
    assert_eq!(first["text"], "Say hi");
    assert_eq!(first["logprobs"]["token_logprobs"], json!([null, -0.5]));
    let second = &events[1]["choices"][0];
    assert_eq!(second["text"], " there");
    assert_eq!(second["logprobs"]["text_offset"], json!([6]));
}

#[test]
fn best_of_returns_the_most_likely_candidates() {
    let h = gen_fake();
    for (text, logprob) in [("a", -2.0), ("b", -0.1), ("c", -1.0)] {
        h.scripts.borrow_mut().push_back(vec![
            token(1, text, text, logprob),
            done(FinishReason::Stop, None),
        ]);
    }
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": "x", "best_of": 3, "n": 2, "seed": 4}),
    );
    assert_eq!(r.status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    let texts: Vec<(&str, u64)> = choices
        .iter()
        .map(|c| (c["text"].as_str().unwrap(), c["index"].as_u64().unwrap()))
        .collect();
    assert_eq!(texts, [("b", 0), ("c", 1)]);
    assert!(choices[0]["logprobs"].is_null(), "not asked for");
    let calls = h.gen_calls.borrow();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.2.logprobs == Some(0)));
    assert_eq!(
        calls.iter().map(|c| c.2.seed).collect::<Vec<_>>(),
        [Some(4), Some(5), Some(6)]
    );
    // Every candidate's tokens are counted (the fake reports 3 each), the prompt once.
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(v["usage"]["prompt_tokens"], 7);
}
