//! `/v1/chat/completions` request validation and the options sent to the host
//! (the sampling fields are shared with `/v1/completions`; they are tested here).

use super::support::{chat, gen_fake, hi};
use super::*;

/// `{"model": "smol", "messages": [user Hi]}` with `extra` merged in.
fn with(extra: Value) -> Value {
    let mut body = json!({"model": "smol", "messages": hi()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn options_for(extra: Value) -> GenerateOptions {
    let h = gen_fake();
    let (r, v) = chat(&h, with(extra));
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    calls[0].2.clone()
}

fn extras_for(extra: Value) -> SamplingExtras {
    let h = gen_fake();
    let (r, v) = chat(&h, with(extra));
    assert_eq!(r.status, 200, "{v}");
    let extras = h.gen_extras.borrow();
    extras[0].clone()
}

#[test]
fn vllm_sampling_extensions_reach_the_host() {
    let e = extras_for(json!({}));
    assert_eq!((e.min_p, e.repetition_penalty), (0.0, 1.0));
    assert!(!e.ignore_eos && e.min_tokens == 0 && e.stop_token_ids.is_empty());
    let e = extras_for(
        json!({"min_p": 0.05, "repetition_penalty": 1.3, "ignore_eos": true,
        "min_tokens": 4, "max_tokens": 8, "stop_token_ids": [2, 49152]}),
    );
    assert_eq!((e.min_p, e.repetition_penalty), (0.05, 1.3));
    assert!(e.ignore_eos);
    assert_eq!(e.min_tokens, 4);
    assert_eq!(e.stop_token_ids, [2, 49152]);
    // vLLM's "off" for top_k.
    assert_eq!(options_for(json!({"top_k": -1})).top_k, 0);
}

#[test]
fn defaults_and_sampling_fields() {
    let o = options_for(json!({}));
    assert_eq!(o.max_tokens, None);
    assert_eq!((o.temperature, o.top_p, o.top_k), (1.0, 1.0, 0));
    assert_eq!((o.presence_penalty, o.frequency_penalty), (0.0, 0.0));
    assert_eq!(o.seed, None);
    assert!(o.stop.is_empty() && !o.add_special_tokens);

    let o = options_for(
        json!({"max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": 40,
        "seed": 7, "stop": "\n", "presence_penalty": -2, "frequency_penalty": 1.5, "n": 1,
        "user": "u", "logprobs": false, "tools": [], "tool_choice": "none", "functions": [], "function_call": "none",
        "parallel_tool_calls": true, "response_format": {"type": "text"}, "logit_bias": {},
        "store": false, "service_tier": "auto", "modalities": ["text"], "audio": null,
        "stream": false}),
    );
    assert_eq!(o.max_tokens, Some(5));
    assert_eq!((o.temperature, o.top_p, o.top_k), (0.0, 0.5, 40));
    assert_eq!((o.presence_penalty, o.frequency_penalty), (-2.0, 1.5));
    assert_eq!(o.seed, Some(7));
    assert_eq!(o.stop, ["\n"]);

    // OpenAI accepts a nucleus of 0; the host then keeps only the most likely token.
    assert_eq!(options_for(json!({"top_p": 0})).top_p, 0.0);
    assert_eq!(
        options_for(json!({"max_completion_tokens": 9})).max_tokens,
        Some(9)
    );
    assert_eq!(
        options_for(json!({"max_tokens": 9, "max_completion_tokens": 9})).max_tokens,
        Some(9)
    );
    assert_eq!(options_for(json!({"seed": -1})).seed, Some(u64::MAX));
    assert_eq!(
        options_for(json!({"stop": ["a", "b", "c", "d"]})).stop,
        ["a", "b", "c", "d"]
    );
    assert!(options_for(json!({"stop": []})).stop.is_empty());
}

#[test]
fn invalid_fields_name_their_param() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"max_tokens": 0}),
            "max_tokens",
            "less than the minimum of 1",
        ),
        (
            json!({"max_tokens": 1.5}),
            "max_tokens",
            "expected an integer",
        ),
        (json!({"max_tokens": "5"}), "max_tokens", "got a string"),
        (
            json!({"max_tokens": 5_000_000_000u64}),
            "max_tokens",
            "greater than the maximum",
        ),
        (
            json!({"max_completion_tokens": -1}),
            "max_completion_tokens",
            "minimum of 1",
        ),
        (
            json!({"max_tokens": 3, "max_completion_tokens": 4}),
            "max_completion_tokens",
            "disagree",
        ),
        (
            json!({"temperature": 2.5}),
            "temperature",
            "greater than the maximum of 2",
        ),
        (
            json!({"temperature": -0.1}),
            "temperature",
            "less than the minimum of 0",
        ),
        (
            json!({"temperature": "hot"}),
            "temperature",
            "expected a number",
        ),
        (json!({"top_p": 1.1}), "top_p", "maximum of 1"),
        (json!({"top_k": -2}), "top_k", "minimum of -1"),
        (json!({"min_p": 1.5}), "min_p", "maximum of 1"),
        (json!({"min_p": -0.1}), "min_p", "minimum of 0"),
        (
            json!({"repetition_penalty": 0}),
            "repetition_penalty",
            "above 0",
        ),
        (
            json!({"repetition_penalty": "1"}),
            "repetition_penalty",
            "expected a number",
        ),
        (json!({"ignore_eos": 1}), "ignore_eos", "expected a boolean"),
        (json!({"min_tokens": -1}), "min_tokens", "minimum of 0"),
        (
            json!({"min_tokens": 6, "max_tokens": 5}),
            "min_tokens",
            "more than 'max_tokens' (5)",
        ),
        (
            json!({"min_tokens": 6, "max_completion_tokens": 5}),
            "min_tokens",
            "more than 'max_completion_tokens' (5)",
        ),
        (json!({"stop_token_ids": 2}), "stop_token_ids", "an array"),
        (
            json!({"stop_token_ids": [2, -1]}),
            "stop_token_ids[1]",
            "not a token id",
        ),
        (
            json!({"stop_token_ids": [2.5]}),
            "stop_token_ids[0]",
            "expected an integer",
        ),
        (json!({"top_k": 2.5}), "top_k", "expected an integer"),
        (json!({"seed": "1"}), "seed", "got a string"),
        (json!({"seed": 1.5}), "seed", "expected an integer"),
        (json!({"stop": ""}), "stop", "cannot be empty"),
        (json!({"stop": ["a", ""]}), "stop[1]", "cannot be empty"),
        (json!({"stop": ["a", 1]}), "stop[1]", "expected a string"),
        (
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            "stop",
            "at most 4",
        ),
        (
            json!({"stop": 5}),
            "stop",
            "a string or an array of strings",
        ),
        (
            json!({"presence_penalty": 2.1}),
            "presence_penalty",
            "maximum of 2",
        ),
        (
            json!({"frequency_penalty": -3}),
            "frequency_penalty",
            "minimum of -2",
        ),
        (json!({"stream": "yes"}), "stream", "expected a boolean"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
            "only allowed when 'stream' is true",
        ),
        (
            json!({"stream": true, "stream_options": 1}),
            "stream_options",
            "expected an object",
        ),
        (
            json!({"stream": true, "stream_options": {"include_usage": 1}}),
            "stream_options.include_usage",
            "expected a boolean",
        ),
        (
            json!({"stream": true, "stream_options": {"x": 1}}),
            "stream_options.x",
            "Unrecognized request argument supplied: stream_options.x",
        ),
        (json!({"n": 17}), "n", "maximum of 16"),
        (json!({"n": 0}), "n", "minimum of 1"),
        (json!({"user": 5}), "user", "expected a string"),
        (json!({"logprobs": 1}), "logprobs", "expected a boolean"),
        (
            json!({"top_logprobs": 2}),
            "top_logprobs",
            "needs 'logprobs'",
        ),
        (
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function",
            "Missing required parameter",
        ),
        (json!({"tools": {}}), "tools", "expected an array"),
        (
            json!({"tool_choice": "auto"}),
            "tool_choice",
            "only allowed when 'tools'",
        ),
        (json!({"functions": [{}]}), "functions", "not supported"),
        (
            json!({"function_call": {"name": "f"}}),
            "function_call",
            "not supported",
        ),
        (
            json!({"parallel_tool_calls": "x"}),
            "parallel_tool_calls",
            "expected a boolean",
        ),
        (
            // JSON mode needs the word in the messages (OpenAI's rule); hi() lacks it.
            json!({"response_format": {"type": "json_object"}}),
            "messages",
            "must contain the word 'json'",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format.json_schema",
            "Missing required parameter",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "response_format.json_schema.name",
            "Missing required parameter",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}),
            "response_format.json_schema.name",
            "'a b'",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}}),
            "response_format.json_schema.schema",
            "expected an object",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "extra": 1}}}),
            "response_format.json_schema.extra",
            "Unrecognized",
        ),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format.type",
            "'yaml'",
        ),
        (
            json!({"response_format": {}}),
            "response_format.type",
            "Missing required parameter",
        ),
        (
            json!({"response_format": "text"}),
            "response_format",
            "expected an object",
        ),
        (
            json!({"logit_bias": {"x": -100}}),
            "logit_bias",
            "not a token id",
        ),
        (
            json!({"logit_bias": {"5": 101}}),
            "logit_bias.5",
            "outside -100..100",
        ),
        (
            json!({"logit_bias": {"5": "1"}}),
            "logit_bias.5",
            "expected a number",
        ),
        (
            json!({"logit_bias": []}),
            "logit_bias",
            "expected an object",
        ),
        (json!({"store": 1}), "store", "expected a boolean"),
        (
            json!({"metadata": {"a": 1}}),
            "metadata.a",
            "expected a string",
        ),
        (
            json!({"metadata": ["a"]}),
            "metadata",
            "expected an object of strings",
        ),
        (
            json!({"service_tier": "flex"}),
            "service_tier",
            "not supported",
        ),
        (
            json!({"modalities": ["text", "audio"]}),
            "modalities",
            "not supported",
        ),
        (json!({"audio": {"voice": "x"}}), "audio", "not supported"),
        (
            json!({"prediction": {"type": "content"}}),
            "prediction",
            "not supported",
        ),
        (
            json!({"reasoning_effort": "low"}),
            "reasoning_effort",
            "not supported",
        ),
        (
            json!({"repeat_penalty": 1.1}),
            "repeat_penalty",
            "Unrecognized request argument supplied: repeat_penalty",
        ),
        (json!({"model": 3}), "model", "expected a string"),
        (json!({"model": ""}), "model", "cannot be an empty string"),
        (
            json!({"model": null}),
            "model",
            "Missing required parameter: 'model'",
        ),
    ];
    let h = gen_fake();
    for (extra, param, fragment) in cases {
        let r = chat(&h, with(extra.clone()));
        assert_error(&r, 400, Some(param), fragment);
    }
    assert!(h.gen_calls.borrow().is_empty());
    let r = chat(&h, with(json!({"functions": [{"name": "f"}]})));
    assert_eq!(r.1["error"]["code"], "unsupported_parameter");
    let r = chat(&h, with(json!({"foo": 1})));
    assert_eq!(r.1["error"]["code"], "unknown_parameter");
}

#[test]
fn what_clients_copy_back_into_messages_is_ignored() {
    let h = gen_fake();
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "Hello", "annotations": [], "parsed": {"a": 1},
             "refusal": null, "audio": null, "function_call": null, "reasoning_content": "hm",
             "provider_specific_fields": {"refusal": null}},
            {"role": "user", "content": "Again", "phase": null},
        ]}),
    );
    assert_eq!(r.status, 200, "{v}");
    let prompt = match &h.gen_calls.borrow()[0].1 {
        Prompt::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        !prompt.contains("hm") && !prompt.contains("ephemeral"),
        "{prompt}"
    );
    // At the top level an unknown field is still an error; null counts as absent.
    let (r, v) = chat(&h, json!({"model": "smol", "messages": hi(), "colour": 1}));
    assert_eq!(
        (r.status, v["error"]["code"].as_str()),
        (400, Some("unknown_parameter"))
    );
    let (r, _) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "colour": null}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn invalid_messages() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!(null),
            "messages",
            "Missing required parameter: 'messages'",
        ),
        (json!([]), "messages", "at least one message"),
        (json!("hi"), "messages", "expected an array of messages"),
        (json!(["hi"]), "messages[0]", "expected a message object"),
        (
            json!([{"content": "x"}]),
            "messages[0].role",
            "Missing required parameter",
        ),
        (
            json!([{"role": "robot", "content": "x"}]),
            "messages[0].role",
            "'robot'",
        ),
        (
            json!([{"role": 1, "content": "x"}]),
            "messages[0].role",
            "expected a string",
        ),
        (
            json!([{"role": "user", "content": "x"}, {"role": "tool", "content": "4"}]),
            "messages[1].tool_call_id",
            "Missing required parameter",
        ),
        (
            json!([{"role": "function", "content": "x", "name": "f"}]),
            "messages[0].role",
            "deprecated",
        ),
        (
            json!([{"role": "user"}]),
            "messages[0].content",
            "Missing required parameter",
        ),
        (
            json!([{"role": "assistant", "content": null}]),
            "messages[0].content",
            "Missing required parameter",
        ),
        (
            json!([{"role": "user", "content": 5}]),
            "messages[0].content",
            "expected a string or an array of content parts",
        ),
        (
            json!([{"role": "user", "content": []}]),
            "messages[0].content",
            "non-empty array",
        ),
        (
            json!([{"role": "user", "content": ["x"]}]),
            "messages[0].content[0]",
            "expected a content part object",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content[1].type",
            "'image_url'; only text content parts",
        ),
        (
            json!([{"role": "user", "content": [{"text": "a"}]}]),
            "messages[0].content[0].type",
            "Missing required parameter",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
            "Missing required parameter",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": 1}]}]),
            "messages[0].content[0].text",
            "expected a string",
        ),
        (
            json!([{"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]}]),
            "messages[0].tool_calls[0].function",
            "expected an object",
        ),
        (
            json!([{"role": "assistant", "content": "x", "function_call": {"name": "f"}}]),
            "messages[0].function_call",
            "use 'tool_calls'",
        ),
        (
            json!([{"role": "assistant", "content": "x", "refusal": "no"}]),
            "messages[0].refusal",
            "not supported",
        ),
        (
            json!([{"role": "user", "content": "x", "name": 1}]),
            "messages[0].name",
            "expected a string",
        ),
    ];
    let h = gen_fake();
    for (messages, param, fragment) in cases {
        let r = chat(&h, json!({"model": "smol", "messages": messages}));
        assert_error(&r, 400, Some(param), fragment);
    }
    assert!(h.gen_calls.borrow().is_empty());
}

#[test]
fn body_and_model_checks() {
    let h = gen_fake();
    let post = |body: &str| call(&h, "POST", "/v1/chat/completions", body);
    assert_error(&post(""), 400, None, "empty");
    assert_error(&post("{"), 400, None, "could not parse");
    assert_error(&post("[]"), 400, None, "must be a JSON object");
    let r = call(&h, "PUT", "/v1/chat/completions", "");
    assert_eq!((r.0.status, r.0.header("allow")), (405, Some("GET, POST")));

    let r = chat(&h, json!({"model": "nope", "messages": hi()}));
    assert_error(&r, 404, Some("model"), "The model 'nope' does not exist");
    assert_error(
        &chat(&h, json!({"model": "base", "messages": hi()})),
        400,
        Some("model"),
        "The model 'base' is a base model without a chat template; use /v1/completions.",
    );
    assert_error(
        &chat(&h, json!({"model": "e5", "messages": hi()})),
        400,
        Some("model"),
        "The model 'e5' is not a chat model (kind: embedding)",
    );
    // A chat model whose host entry has no template.
    assert_error(
        &chat(&h, json!({"model": "chatty", "messages": hi()})),
        400,
        Some("model"),
        "without a chat template",
    );
    // max_tokens must leave room for the prompt.
    let r = chat(&h, with(json!({"max_completion_tokens": 512})));
    assert_error(
        &r,
        400,
        Some("max_completion_tokens"),
        "context length of 512",
    );
    assert_eq!(r.1["error"]["code"], "context_length_exceeded");
    assert!(h.gen_calls.borrow().is_empty());
    assert_eq!(chat(&h, with(json!({"max_tokens": 511}))).0.status, 200);
}
