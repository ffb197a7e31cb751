//! Log probabilities (chat's and completions' shapes, streamed and not) and
//! `logit_bias` and JSON mode: what the router asks of the host and how it renders
//! the answer.

use super::responses::{events, respond};
use super::support::{chat, complete, done, gen_fake, hi, post, sse_data, token};
use super::*;

fn logprob_script() -> Vec<Event> {
    vec![
        token(5, "Hel", "Hel", -0.25),
        // Held back (it might start a stop sequence), then released with the next.
        token(6, "l", "", -1.0),
        token(7, "o!", "lo!", -0.5),
        done(FinishReason::Stop, None),
    ]
}

#[test]
fn chat_logprobs_per_token_with_bytes_and_alternatives() {
    let mut h = gen_fake();
    h.script = logprob_script();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(h.gen_calls.borrow()[0].2.logprobs, Some(2));
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["refusal"], Value::Null);
    let content = lp["content"].as_array().unwrap();
    let tokens: Vec<_> = content
        .iter()
        .map(|c| c["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["Hel", "l", "o!"]);
    assert_eq!(content[0]["logprob"], -0.25);
    assert_eq!(content[0]["bytes"], json!([72, 101, 108]));
    assert_eq!(
        content[2]["top_logprobs"],
        json!([{"token": "o!", "logprob": -0.5, "bytes": [111, 33]},
               {"token": "x", "logprob": -3.5, "bytes": [120]}])
    );
    // Without the flag: no log probabilities asked for, `logprobs: null`.
    let (_, v) = chat(&h, json!({"model": "smol", "messages": hi()}));
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    assert_eq!(h.gen_calls.borrow()[1].2.logprobs, None);
}

#[test]
fn completions_logprobs_stream_with_continuing_offsets() {
    let mut h = gen_fake();
    h.script = logprob_script();
    let r = post(
        &h,
        "/v1/completions",
        &json!({"model": "base", "prompt": "x", "logprobs": 1, "stream": true}),
    );
    let data = sse_data(&r.body);
    let lps: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["logprobs"].clone())
        .collect();
    assert_eq!(lps.len(), 3, "{lps:?}"); // "Hel", "lo!" (with the held-back "l"), finish
    assert_eq!(lps[0]["tokens"], json!(["Hel"]));
    assert_eq!(lps[0]["text_offset"], json!([0]));
    assert_eq!(lps[1]["tokens"], json!(["l", "o!"]));
    assert_eq!(lps[1]["token_logprobs"], json!([-1.0, -0.5]));
    assert_eq!(lps[1]["text_offset"], json!([3, 4]));
    assert_eq!(lps[1]["top_logprobs"][1], json!({"o!": -0.5, "x": -3.5}));
    assert_eq!(lps[2], Value::Null);

    let (_, v) = complete(&h, json!({"model": "base", "prompt": "x", "logprobs": 0}));
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["Hel", "l", "o!"]));
    assert_eq!(lp["text_offset"], json!([0, 3, 4]));
}

#[test]
fn logprobs_fields_are_checked() {
    let h = gen_fake();
    let r = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "top_logprobs": 2}),
    );
    assert_error(&r, 400, Some("top_logprobs"), "needs 'logprobs' to be true");
    // 0 alternatives without logprobs is what clients that send every field send.
    let r = chat(
        &gen_fake(),
        json!({"model": "smol", "messages": hi(), "logprobs": false, "top_logprobs": 0}),
    );
    assert_eq!(r.0.status, 200, "{}", r.1);
    assert_eq!(r.1["choices"][0]["logprobs"], Value::Null);
    let r = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "logprobs": true, "top_logprobs": 21}),
    );
    assert_error(&r, 400, Some("top_logprobs"), "maximum of 20");
    let r = complete(&h, json!({"model": "base", "prompt": "x", "logprobs": 6}));
    assert_error(&r, 400, Some("logprobs"), "maximum of 5");
    let r = complete(
        &h,
        json!({"model": "base", "prompt": "x", "logprobs": true}),
    );
    assert_error(&r, 400, Some("logprobs"), "integer");
    assert!(h.gen_calls.borrow().is_empty());
}

#[test]
fn logit_bias_goes_to_the_host() {
    let h = gen_fake();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "logit_bias": {"42": -100, "7": 2.5}}),
    );
    assert_eq!(r.status, 200, "{v}");
    let mut bias = h.gen_calls.borrow()[0].2.logit_bias.clone();
    bias.sort_by_key(|b| b.0);
    assert_eq!(bias, [(7, 2.5), (42, -100.0)]);
}

#[test]
fn json_mode_goes_to_the_host() {
    let h = gen_fake();
    let ask = json!([{"role": "user", "content": "Answer in JSON: name and age."}]);
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": ask, "response_format": {"type": "json_object"}, "n": 2}),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|c| matches!(c.2.format, OutputFormat::JsonObject)));
    drop(calls);
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "response_format": {"type": "text"}}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert!(matches!(
        h.gen_calls.borrow()[2].2.format,
        OutputFormat::Text
    ));
    // A schema goes to the host as JSON text, its properties in their order.
    let schema = json!({"type": "object", "properties": {"b": {"type": "integer"}, "a": {}}});
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "response_format":
            {"type": "json_schema", "json_schema": {"name": "pair", "strict": true, "schema": schema}}}),
    );
    assert_eq!(r.status, 200, "{v}");
    let format = h.gen_calls.borrow()[3].2.format.clone();
    match &format {
        OutputFormat::JsonSchema(text) => assert_eq!(
            text,
            r#"{"type":"object","properties":{"b":{"type":"integer"},"a":{}}}"#
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn responses_logprobs_when_included() {
    let mut h = gen_fake();
    h.script = logprob_script();
    let (r, v) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "include": ["message.output_text.logprobs"],
               "top_logprobs": 2}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(h.gen_calls.borrow()[0].2.logprobs, Some(2));
    assert_eq!(v["top_logprobs"], 2);
    let part = &v["output"][0]["content"][0];
    assert_eq!(part["text"], "Hello!");
    let tokens: Vec<_> = part["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["Hel", "l", "o!"]);
    assert_eq!(part["logprobs"][0]["bytes"], json!([72, 101, 108]));
    assert_eq!(
        part["logprobs"][2]["top_logprobs"][1],
        json!({"token": "x", "logprob": -3.5, "bytes": [120]})
    );
    // `include` alone: the tokens without alternatives; neither: none asked for.
    let (_, v) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "include": ["message.output_text.logprobs"]}),
    );
    assert_eq!(h.gen_calls.borrow()[1].2.logprobs, Some(0));
    assert_eq!(v["output"][0]["content"][0]["logprobs"][1]["logprob"], -1.0);
    let (_, v) = respond(&h, json!({"model": "smol", "input": "Hi", "include": []}));
    assert_eq!(h.gen_calls.borrow()[2].2.logprobs, None);
    assert_eq!(v["output"][0]["content"][0]["logprobs"], json!([]));
}

#[test]
fn streamed_responses_logprobs_follow_their_deltas() {
    let mut h = gen_fake();
    h.script = logprob_script();
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "smol", "input": "Hi", "stream": true, "top_logprobs": 1}),
    );
    let events = events(&r.body);
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d)
        .collect();
    // "l" was held back and comes with "o!": its delta carries both tokens.
    let per_delta: Vec<usize> = deltas
        .iter()
        .map(|d| d["logprobs"].as_array().unwrap().len())
        .collect();
    assert_eq!(per_delta, [1, 2]);
    assert_eq!(deltas[1]["logprobs"][0]["token"], "l");
    let done = &events
        .iter()
        .find(|(k, _)| k == "response.output_text.done")
        .unwrap()
        .1;
    assert_eq!(done["logprobs"].as_array().unwrap().len(), 3);
    let last = &events.last().unwrap().1["response"];
    assert_eq!(
        last["output"][0]["content"][0]["logprobs"][2]["logprob"],
        -0.5
    );
}
