//! Stored chat completions (`store: true`): what is kept, streamed or not, and the
//! calls that read, update, list and delete it.

use super::support::{chat, gen_fake, hi, post, sse_data};
use super::*;

fn get(h: &Fake, path: &str) -> (Response, Value) {
    call(h, "GET", path, "")
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_stored_completion_is_read_updated_listed_and_deleted() {
    let h = gen_fake();
    let messages = json!([{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]);
    let (r, made) = chat(
        &h,
        json!({"model": "smol", "messages": messages, "store": true, "metadata": {"topic": "greeting"}}),
    );
    assert_eq!(r.status, 200, "{made}");
    assert!(made.get("metadata").is_none());
    let id = made["id"].as_str().unwrap();
    let (r, got) = get(&h, &format!("/v1/chat/completions/{id}"));
    assert_eq!(r.status, 200, "{got}");
    let mut expected = made.clone();
    expected["metadata"] = json!({"topic": "greeting"});
    assert_eq!(got, expected);

    let (_, msgs) = get(&h, &format!("/v1/chat/completions/{id}/messages"));
    assert_eq!(ids(&msgs), [format!("{id}-0"), format!("{id}-1")]);
    assert_eq!(msgs["data"][1]["content"], "Hi");
    assert_eq!(msgs["data"][1]["content_parts"][0]["text"], "Hi");
    assert_eq!(msgs["data"][0]["content_parts"], Value::Null);
    let (_, msgs) = get(
        &h,
        &format!("/v1/chat/completions/{id}/messages?order=desc&limit=1"),
    );
    assert_eq!(
        (ids(&msgs), msgs["has_more"].as_bool()),
        (vec![format!("{id}-1")], Some(true))
    );

    // Not stored: store false (the default).
    let (_, other) = chat(&h, json!({"model": "smol", "messages": hi()}));
    let (r, _) = get(
        &h,
        &format!("/v1/chat/completions/{}", other["id"].as_str().unwrap()),
    );
    assert_eq!(r.status, 404);
    let (_, second) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "store": true}),
    );
    let second = second["id"].as_str().unwrap();

    let (_, list) = get(&h, "/v1/chat/completions");
    assert_eq!(ids(&list), [id, second]);
    assert_eq!(list["data"][0]["object"], "chat.completion");
    let (_, list) = get(
        &h,
        "/v1/chat/completions?metadata%5Btopic%5D=greeting&model=smol",
    );
    assert_eq!(ids(&list), [id]);
    let (_, list) = get(
        &h,
        &format!("/v1/chat/completions?order=desc&after={second}"),
    );
    assert_eq!(ids(&list), [id]);
    let (_, list) = get(&h, "/v1/chat/completions?model=gemma");
    assert_eq!(
        (list["data"].as_array().unwrap().len(), &list["first_id"]),
        (0, &Value::Null)
    );

    let (r, updated) = call(
        &h,
        "POST",
        &format!("/v1/chat/completions/{id}"),
        r#"{"metadata": {"topic": "hello"}}"#,
    );
    assert_eq!(r.status, 200, "{updated}");
    assert_eq!(updated["metadata"], json!({"topic": "hello"}));
    let (_, list) = get(&h, "/v1/chat/completions?metadata[topic]=hello");
    assert_eq!(ids(&list), [id]);
    // An update keeps the completion's place in the list.
    let (_, list) = get(&h, "/v1/chat/completions");
    assert_eq!(ids(&list), [id, second]);

    let (r, deleted) = call(&h, "DELETE", &format!("/v1/chat/completions/{id}"), "");
    assert_eq!(r.status, 200);
    assert_eq!(
        deleted,
        json!({"object": "chat.completion.deleted", "id": id, "deleted": true})
    );
    assert_error(
        &call(&h, "DELETE", &format!("/v1/chat/completions/{id}"), ""),
        404,
        None,
        "No chat completion",
    );
    let (_, list) = get(&h, "/v1/chat/completions");
    assert_eq!(ids(&list), [second]);
}

#[test]
fn a_streamed_completion_is_stored_as_it_adds_up() {
    let h = gen_fake();
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true, "store": true}),
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    // The client did not ask for usage: no usage chunk, no `usage` fields.
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty()));
    let id = chunks[0]["id"].as_str().unwrap();
    let (_, stored) = get(&h, &format!("/v1/chat/completions/{id}"));
    assert_eq!(
        stored["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello!"})
    );
    assert_eq!(stored["choices"][0]["finish_reason"], "stop");
    assert_eq!(stored["usage"]["total_tokens"], 10);
    assert_eq!(stored["object"], "chat.completion");

    // Asked for: the usage chunk stays.
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true, "store": true,
                "stream_options": {"include_usage": true}}),
    );
    let data = sse_data(&r.body);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 10);
    let (_, list) = get(&h, "/v1/chat/completions");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failed_stream_is_not_stored() {
    let mut h = gen_fake();
    h.script = vec![
        super::support::text("Hel"),
        super::support::done(
            FinishReason::Error,
            Some(HostError {
                code: ErrorCode::Internal,
                message: "boom".into(),
                param: None,
            }),
        ),
    ];
    let r = post(
        &h,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": hi(), "stream": true, "store": true}),
    );
    assert!(String::from_utf8_lossy(&r.body).contains("boom"));
    let (_, list) = get(&h, "/v1/chat/completions");
    assert_eq!(list["data"], json!([]));
}

#[test]
fn stored_completion_errors() {
    let h = gen_fake();
    let (_, made) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "store": true}),
    );
    let id = made["id"].as_str().unwrap();
    for (method, path, body, status, param, says) in [
        (
            "GET",
            "/v1/chat/completions/chatcmpl-nothere".to_string(),
            "",
            404,
            None,
            "No chat completion",
        ),
        (
            "GET",
            "/v1/chat/completions/..%2Fsecret".to_string(),
            "",
            404,
            None,
            "No chat completion",
        ),
        (
            "GET",
            "/v1/chat/completions?limit=0".to_string(),
            "",
            400,
            Some("limit"),
            "from 1 to 100",
        ),
        (
            "GET",
            "/v1/chat/completions?order=sideways".to_string(),
            "",
            400,
            Some("order"),
            "'asc' or 'desc'",
        ),
        (
            "GET",
            "/v1/chat/completions?after=chatcmpl-gone".to_string(),
            "",
            400,
            Some("after"),
            "not an id",
        ),
        (
            "GET",
            "/v1/chat/completions?colour=red".to_string(),
            "",
            400,
            Some("colour"),
            "Unrecognized",
        ),
        (
            "GET",
            format!("/v1/chat/completions/{id}/messages?model=x"),
            "",
            400,
            Some("model"),
            "Unrecognized",
        ),
        (
            "POST",
            format!("/v1/chat/completions/{id}"),
            "{}",
            400,
            Some("metadata"),
            "Missing required",
        ),
        (
            "POST",
            format!("/v1/chat/completions/{id}"),
            r#"{"metadata": {"k": 5}}"#,
            400,
            Some("metadata.k"),
            "a string",
        ),
        (
            "POST",
            format!("/v1/chat/completions/{id}"),
            r#"{"metadata": {}, "x": 1}"#,
            400,
            Some("x"),
            "Unrecognized",
        ),
        (
            "PUT",
            format!("/v1/chat/completions/{id}"),
            "",
            405,
            None,
            "PUT",
        ),
    ] {
        assert_error(&call(&h, method, &path, body), status, param, says);
    }
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "metadata": many}),
    );
    assert_error(&r, 400, Some("metadata"), "at most 16");
}
