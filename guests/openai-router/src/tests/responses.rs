//! `/v1/responses`: the conversation the router renders from `instructions` and
//! `input` items, the response object, the streamed event sequence, and errors.

use super::support::{done, gen_fake, post, text};
use super::*;

pub(super) fn respond(h: &Fake, body: Value) -> (Response, Value) {
    call(h, "POST", "/v1/responses", &body.to_string())
}

pub(super) fn prompt_of(h: &Fake, call: usize) -> String {
    match &h.gen_calls.borrow()[call].1 {
        Prompt::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    }
}

/// The `event:` names and `data:` objects of a Responses API stream.
pub(super) fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).unwrap();
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            let kind = event.strip_prefix("event: ").unwrap().to_string();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], kind.as_str());
            (kind, data)
        })
        .collect()
}

#[test]
fn text_input_and_instructions_make_the_conversation() {
    let h = gen_fake();
    let (r, v) = respond(
        &h,
        json!({"model": "smol", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 20,
               "temperature": 0.5, "store": true, "metadata": {"k": "v"}}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        prompt_of(&h, 0),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let options = h.gen_calls.borrow()[0].2.clone();
    assert_eq!((options.max_tokens, options.temperature), (Some(20), 0.5));
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["role"], "assistant");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(v["usage"]["input_tokens"], 7);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 10);
    assert_eq!(
        (v["instructions"].as_str(), v["store"].as_bool()),
        (Some("Be brief."), Some(true))
    );
    assert_eq!(v["metadata"], json!({"k": "v"}));
}

#[test]
fn items_with_earlier_calls_and_outputs_are_text_the_model_reads() {
    let h = gen_fake();
    let (r, v) = respond(
        &h,
        json!({"model": "smol", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}",
             "id": "fc_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Cold.", "annotations": []}]}
        ]}),
    );
    assert_eq!(r.status, 200, "{v}");
    let prompt = prompt_of(&h, 0);
    assert!(
        prompt.contains("<|im_start|>user\nWeather?<|im_end|>"),
        "{prompt}"
    );
    assert!(prompt.contains("<|im_start|>assistant\n{\"tool_calls\":[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}]}<|im_end|>"), "{prompt}");
    assert!(
        prompt.contains(
            "<|im_start|>user\nResult of the tool call get_weather {\"city\":\"Oslo\"}:\ncold<|im_end|>"
        ),
        "{prompt}"
    );
    assert!(
        prompt.contains("<|im_start|>assistant\nCold.<|im_end|>"),
        "{prompt}"
    );
}

#[test]
fn cut_answers_are_incomplete_and_calls_are_function_call_items() {
    let mut h = gen_fake();
    h.script = vec![text("Hel"), done(FinishReason::Length, None)];
    let (_, v) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "max_output_tokens": 1}),
    );
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["status"], "incomplete");

    h.script = vec![
        text(r#"{"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}"#),
        done(FinishReason::Stop, None),
    ];
    let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object",
        "properties": {"x": {"type": "integer"}}}}]);
    let (r, v) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "tools": tools, "tool_choice": "required"}),
    );
    assert_eq!(r.status, 200, "{v}");
    let item = &v["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "f");
    assert_eq!(item["arguments"], r#"{"x":1}"#);
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(item["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(v["tools"][0]["name"], "f");
    assert!(matches!(
        h.gen_calls.borrow()[1].2.format,
        OutputFormat::JsonSchema(_)
    ));
}

#[test]
fn streamed_text_comes_as_typed_events_in_order() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "smol", "input": "Hi", "stream": true}),
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = events(&r.body);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[4].1["delta"], "Hel");
    assert_eq!(events[6].1["text"], "Hello!");
    let last = &events[9].1["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(last["usage"]["output_tokens"], 3);
}

#[test]
fn streamed_calls_come_as_function_call_events() {
    let mut h = gen_fake();
    h.script = vec![
        text(r#"{"tool_calls": [{"name": "f", "arguments": {}}]}"#),
        done(FinishReason::Stop, None),
    ];
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "smol", "input": "Hi", "stream": true,
        "tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}),
    );
    let events = events(&r.body);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[2].1["item"]["type"], "function_call");
    assert_eq!(events[4].1["arguments"], "{}");
}

#[test]
fn response_request_errors_name_their_param() {
    let h = gen_fake();
    for (body, param, says) in [
        (
            json!({"model": "smol"}),
            "input",
            "Missing required parameter",
        ),
        (json!({"model": "smol", "input": []}), "input", "non-empty"),
        (
            json!({"model": "smol", "input": 5}),
            "input",
            "expected a string or an array",
        ),
        (
            json!({"model": "smol", "input": [{"type": "reasoning"}]}),
            "input[0].type",
            "'reasoning'",
        ),
        (
            json!({"model": "smol", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input[0].content[0].type",
            "only text content parts",
        ),
        (
            json!({"model": "smol", "input": "Hi", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
            "only 'function'",
        ),
        (
            json!({"model": "smol", "input": "Hi", "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"}}),
            "tool_choice",
            "not in 'tools'",
        ),
        (
            json!({"model": "smol", "input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}}),
            "text.format.schema",
            "Missing required parameter",
        ),
        (
            json!({"model": "smol", "input": "Hi", "max_output_tokens": 0}),
            "max_output_tokens",
            "minimum",
        ),
        (
            json!({"model": "smol", "input": "Hi", "reasoning": {"effort": "high"}}),
            "reasoning",
            "do not reason",
        ),
        (
            json!({"model": "smol", "input": "Hi", "include": ["file_search_call.results"]}),
            "include[0]",
            "'message.output_text.logprobs' can",
        ),
        (
            json!({"model": "smol", "input": "Hi", "include": "message.output_text.logprobs"}),
            "include",
            "expected an array of strings",
        ),
        (
            json!({"model": "smol", "input": "Hi", "top_logprobs": 21}),
            "top_logprobs",
            "maximum of 20",
        ),
        (
            json!({"model": "smol", "input": "Hi", "frobnicate": 1}),
            "frobnicate",
            "Unrecognized",
        ),
        (
            json!({"model": "base", "input": "Hi"}),
            "model",
            "/v1/completions",
        ),
    ] {
        assert_error(&respond(&h, body.clone()), 400, Some(param), says);
    }
    assert!(h.gen_calls.borrow().is_empty());
}
