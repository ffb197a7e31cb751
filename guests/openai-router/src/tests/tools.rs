//! Tool calling: the instructions and answer schema the router sends, how answers
//! become `tool_calls` (buffered and streamed), earlier calls and results in the
//! prompt, and the request errors.

use super::support::{chat, done, gen_fake, post, sse_data, text};
use super::*;

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"city": {"$ref": "#/$defs/City"}},
                           "$defs": {"City": {"type": "string"}}}}}
    ])
}

fn ask(extra: Value) -> Value {
    let mut body = json!({"model": "smol", "tools": weather_tools(),
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn sent_schema(h: &Fake, call: usize) -> Value {
    match &h.gen_calls.borrow()[call].2.format {
        OutputFormat::JsonSchema(s) => serde_json::from_str(s).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn sent_prompt(h: &Fake, call: usize) -> String {
    match &h.gen_calls.borrow()[call].1 {
        Prompt::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tools_become_instructions_and_an_answer_schema() {
    let h = gen_fake();
    let (r, v) = chat(&h, ask(json!({})));
    assert_eq!(r.status, 200, "{v}");
    let prompt = sent_prompt(&h, 0);
    assert!(
        prompt.starts_with("<|im_start|>system\nYou can call these tools"),
        "{prompt}"
    );
    assert!(prompt.contains(r#""name":"get_weather","description":"Weather in a city""#));
    assert!(
        prompt.contains(r#"{"response": "<your answer>"}"#),
        "auto offers answering"
    );
    let schema = sent_schema(&h, 0);
    let calls = &schema["anyOf"][0]["properties"]["tool_calls"];
    assert_eq!(calls["maxItems"], 8);
    assert_eq!(
        calls["items"]["anyOf"][0]["properties"]["name"]["const"],
        "get_weather"
    );
    // A tool's own definitions move to the root, its references follow them.
    assert_eq!(
        calls["items"]["anyOf"][1]["properties"]["arguments"]["properties"]["city"]["$ref"],
        "#/$defs/get_time.City"
    );
    assert_eq!(schema["$defs"]["get_time.City"]["type"], "string");
    assert_eq!(
        schema["anyOf"][1]["properties"]["response"]["type"],
        "string"
    );

    // A named function: only it, called once, and no answering instead.
    let (r, _) = chat(
        &h,
        ask(json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}}})),
    );
    assert_eq!(r.status, 200);
    let schema = sent_schema(&h, 1);
    let calls = &schema["properties"]["tool_calls"];
    assert_eq!(calls["maxItems"], 1);
    assert_eq!(calls["items"]["properties"]["name"]["const"], "get_time");
    assert!(!sent_prompt(&h, 1).contains("get_weather"));
    // `none`: as if there were no tools.
    let (r, _) = chat(&h, ask(json!({"tool_choice": "none"})));
    assert_eq!(r.status, 200);
    assert!(matches!(
        h.gen_calls.borrow()[2].2.format,
        OutputFormat::Text
    ));
    assert!(!sent_prompt(&h, 2).contains("tools"));
}

#[test]
fn answers_become_tool_calls_or_content() {
    let calls = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                   {"name": "get_time", "arguments": {"city": "Oslo"}}]}"#;
    let mut h = gen_fake();
    h.script = vec![text(calls), done(FinishReason::Stop, None)];
    let (r, v) = chat(&h, ask(json!({"tool_choice": "required"})));
    assert_eq!(r.status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let out = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(out.len(), 2, "{v}");
    assert_eq!(out[0]["type"], "function");
    assert_eq!(out[0]["function"]["name"], "get_weather");
    assert_eq!(out[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert!(out[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_ne!(out[0]["id"], out[1]["id"]);
    assert!(out[0].get("index").is_none());

    h.script = vec![
        text(r#"{"response": "It is sunny."}"#),
        done(FinishReason::Stop, None),
    ];
    let (_, v) = chat(&h, ask(json!({})));
    assert_eq!(v["choices"][0]["message"]["content"], "It is sunny.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());

    // Cut short by max_tokens before a call was finished: the text as it is.
    h.script = vec![
        text(r#"{"tool_calls": [{"na"#),
        done(FinishReason::Length, None),
    ];
    let (_, v) = chat(&h, ask(json!({})));
    assert_eq!(
        v["choices"][0]["message"]["content"],
        r#"{"tool_calls": [{"na"#
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Cut short after finished calls: those calls, still `length`.
    h.script = vec![
        text(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, "#),
        text(r#"{"name": "get_weather", "arguments": {"city": "Ro"#),
        done(FinishReason::Length, None),
    ];
    let (_, v) = chat(&h, ask(json!({})));
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null, "{v}");
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn a_response_format_beside_tools_shapes_the_answer_in_words() {
    let mut h = gen_fake();
    h.script = vec![
        text(r#"{"response": {"city": "Paris", "$ref_free": true}}"#),
        done(FinishReason::Stop, None),
    ];
    let format = json!({"type": "json_schema", "json_schema": {"name": "A", "schema": {
        "type": "object", "properties": {"city": {"$ref": "#/$defs/City"}},
        "$defs": {"City": {"type": "string"}}}}});
    let (r, v) = chat(&h, ask(json!({"response_format": format})));
    assert_eq!(r.status, 200, "{v}");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], r#"{"city":"Paris","$ref_free":true}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // The output's schema: calls, or a response held to the format (its
    // definitions hoisted beside the tools').
    let calls = h.gen_calls.borrow();
    let OutputFormat::JsonSchema(schema) = &calls[0].2.format else {
        panic!("{:?}", calls[0].2.format)
    };
    let schema: Value = serde_json::from_str(schema).unwrap();
    let response = &schema["anyOf"][1]["properties"]["response"];
    assert_eq!(
        response["properties"]["city"]["$ref"],
        "#/$defs/:response.City"
    );
    assert_eq!(schema["$defs"][":response.City"], json!({"type": "string"}));
    assert!(sent_prompt(&h, 0).contains("that answer follows this JSON Schema"));
    drop(calls);
    // A forced call has no answer in words: the format is moot.
    let (r, v) = chat(
        &h,
        ask(
            json!({"response_format": {"type": "json_object"}, "tool_choice": "required",
                   "messages": [{"role": "user", "content": "json"}]}),
        ),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    let OutputFormat::JsonSchema(schema) = &calls[1].2.format else {
        panic!()
    };
    assert!(!schema.contains("\"response\""), "{schema}");
}

#[test]
fn streamed_answers_send_their_calls_in_one_delta() {
    let mut h = gen_fake();
    h.script = vec![
        text(r#"{"tool_calls": [{"name": "get_weather", "#),
        text(r#""arguments": {"city": "Paris"}}]}"#),
        done(FinishReason::Stop, None),
    ];
    let r = post(
        &h,
        "/v1/chat/completions",
        &ask(json!({"stream": true, "tool_choice": "required"})),
    );
    let events = sse_data(&r.body);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(chunks.len(), 3, "role, calls, finish: {chunks:?}");
    // As OpenAI streams calls: the role without content (the SDK then ends with
    // `content: None`, as the whole answer has).
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    let delta = &chunks[1]["choices"][0]["delta"];
    assert_eq!(delta["tool_calls"][0]["index"], 0);
    assert_eq!(delta["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        delta["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn earlier_calls_and_results_are_text_the_model_reads() {
    let h = gen_fake();
    let (r, v) = chat(
        &h,
        ask(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
            {"role": "tool", "tool_call_id": "call_9", "content": "no such call"}
        ]})),
    );
    assert_eq!(r.status, 200, "{v}");
    let prompt = sent_prompt(&h, 0);
    assert!(
        prompt.starts_with("<|im_start|>system\nBe brief.\n\nYou can call"),
        "{prompt}"
    );
    assert!(prompt.contains(
        "<|im_start|>assistant\n{\"tool_calls\":[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}]}<|im_end|>"
    ), "{prompt}");
    assert!(prompt.contains(
        "<|im_start|>user\nResult of the tool call get_weather {\"city\":\"Paris\"}:\n18 C, sunny<|im_end|>"
    ), "{prompt}");
    // A call no earlier turn shows can only be named by its id.
    assert!(
        prompt
            .contains("<|im_start|>user\nResult of the tool call call_9:\nno such call<|im_end|>"),
        "{prompt}"
    );
}

#[test]
fn tool_request_errors_name_their_param() {
    let h = gen_fake();
    for (extra, param, says) in [
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "not in 'tools'",
        ),
        (
            json!({"tool_choice": "sometimes"}),
            "tool_choice",
            "'sometimes'",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
            "'a b'",
        ),
        (
            json!({"tools": [{"type": "custom"}]}),
            "tools[0].type",
            "only 'function'",
        ),
        (json!({"tools": {}}), "tools", "expected an array"),
        (
            json!({"tools": [], "tool_choice": "required"}),
            "tool_choice",
            "only allowed when 'tools'",
        ),
        (
            json!({"functions": [{"name": "f"}]}),
            "functions",
            "use 'tools'",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
            "Missing required parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
            "messages[0].tool_calls",
            "only allowed in assistant messages",
        ),
        (
            json!({"messages": [{"role": "function", "content": "x", "name": "f"}]}),
            "messages[0].role",
            "deprecated",
        ),
    ] {
        let r = chat(&h, ask(extra.clone()));
        assert_error(&r, 400, Some(param), says);
    }
}

#[test]
fn a_repeated_call_ends_the_answer() {
    let mut h = gen_fake();
    // A small model's loop: the same call again and again (and more after it).
    h.script = vec![
        text(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, "#),
        text(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}, {"na"#),
        text(r#"me": "get_weather", "arguments": {"city": "Paris"}}]}"#),
        done(FinishReason::Stop, None),
    ];
    let (r, v) = chat(&h, ask(json!({"tool_choice": "required"})));
    assert_eq!(r.status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let out = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(out.len(), 1, "{v}");
    assert_eq!(out[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    // The generation was cancelled after the second chunk; usage counts what was made.
    let log = h.log.borrow().clone();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("next")).count(),
        2,
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("drop")), "{log:?}");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // Streamed, and through the Responses API: the same single call.
    let r = post(
        &h,
        "/v1/chat/completions",
        &ask(json!({"tool_choice": "required", "stream": true})),
    );
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(body.matches("get_weather").count(), 1, "{body}");
    let (_, v) = super::responses::respond(
        &h,
        json!({"model": "smol", "input": "Weather?", "tool_choice": "required",
               "tools": [{"type": "function", "name": "get_weather",
                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}),
    );
    assert_eq!(v["output"].as_array().unwrap().len(), 1, "{v}");
}
