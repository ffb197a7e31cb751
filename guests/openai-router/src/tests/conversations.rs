//! The Conversations API and `conversation` on `/v1/responses`: items kept, listed,
//! added and deleted; a response reads them first and adds its own.

use super::responses::{prompt_of, respond};
use super::support::gen_fake;
use super::*;

fn req(h: &Fake, method: &str, path: &str, body: Value) -> (Response, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(h, method, path, &body)
}

#[test]
fn a_conversation_holds_items_and_responses_add_to_it() {
    let h = gen_fake();
    let (r, conv) = req(
        &h,
        "POST",
        "/v1/conversations",
        json!({"items": [{"role": "system", "content": "Be brief."}], "metadata": {"topic": "x"}}),
    );
    assert_eq!(r.status, 200, "{conv}");
    let id = conv["id"].as_str().unwrap();
    assert!(id.starts_with("conv_"));
    assert_eq!(
        (conv["object"].as_str(), &conv["metadata"]),
        (Some("conversation"), &json!({"topic": "x"}))
    );

    let (r, v) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "conversation": id}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["conversation"], json!({"id": id}));
    assert_eq!(
        prompt_of(&h, 0),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The second turn sees the first one's question and answer.
    let (_, _) = respond(
        &h,
        json!({"model": "smol", "input": "More?", "conversation": {"id": id}, "store": false}),
    );
    assert!(prompt_of(&h, 1).contains("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nMore?"));

    let (_, items) = req(
        &h,
        "GET",
        &format!("/v1/conversations/{id}/items?order=asc"),
        Value::Null,
    );
    let roles: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(
        items["data"][1]["content"],
        json!([{"type": "input_text", "text": "Hi"}])
    );
    assert_eq!(items["data"][2]["content"][0]["text"], "Hello!");
    let (_, newest) = req(
        &h,
        "GET",
        &format!("/v1/conversations/{id}/items?limit=1"),
        Value::Null,
    );
    assert_eq!(
        (
            newest["data"][0]["role"].as_str(),
            newest["has_more"].as_bool()
        ),
        (Some("assistant"), Some(true))
    );

    let (r, added) = req(
        &h,
        "POST",
        &format!("/v1/conversations/{id}/items"),
        json!({"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Note"}]}]}),
    );
    assert_eq!(r.status, 200, "{added}");
    let item_id = added["data"][0]["id"].as_str().unwrap().to_string();
    let (_, item) = req(
        &h,
        "GET",
        &format!("/v1/conversations/{id}/items/{item_id}"),
        Value::Null,
    );
    assert_eq!(item["content"][0]["text"], "Note");
    let (r, after) = req(
        &h,
        "DELETE",
        &format!("/v1/conversations/{id}/items/{item_id}"),
        Value::Null,
    );
    assert_eq!((r.status, after["id"].as_str()), (200, Some(id)));
    let (r, _) = req(
        &h,
        "GET",
        &format!("/v1/conversations/{id}/items/{item_id}"),
        Value::Null,
    );
    assert_eq!(r.status, 404);
    // Ids stay unique after a delete.
    let (_, again) = req(
        &h,
        "POST",
        &format!("/v1/conversations/{id}/items"),
        json!({"items": [{"role": "user", "content": "x"}]}),
    );
    assert_ne!(again["data"][0]["id"].as_str(), Some(item_id.as_str()));

    let (_, updated) = req(
        &h,
        "POST",
        &format!("/v1/conversations/{id}"),
        json!({"metadata": {"topic": "y"}}),
    );
    assert_eq!(updated["metadata"], json!({"topic": "y"}));
    let (_, got) = req(&h, "GET", &format!("/v1/conversations/{id}"), Value::Null);
    assert_eq!(got, updated);
    let (r, deleted) = req(
        &h,
        "DELETE",
        &format!("/v1/conversations/{id}"),
        Value::Null,
    );
    assert_eq!(
        (r.status, deleted),
        (
            200,
            json!({"id": id, "object": "conversation.deleted", "deleted": true})
        )
    );
    let r = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "conversation": id}),
    );
    assert_error(&r, 404, Some("conversation"), "No conversation");
}

#[test]
fn conversation_errors() {
    let h = gen_fake();
    let (_, conv) = req(&h, "POST", "/v1/conversations", json!({}));
    let id = conv["id"].as_str().unwrap();
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    for (method, path, body, status, param, says) in [
        (
            "POST",
            "/v1/conversations".to_string(),
            json!({"items": many}),
            400,
            Some("items"),
            "at most 20",
        ),
        (
            "POST",
            "/v1/conversations".to_string(),
            json!({"items": [{"role": "robot", "content": "x"}]}),
            400,
            Some("items[0].role"),
            "'robot'",
        ),
        (
            "POST",
            "/v1/conversations".to_string(),
            json!({"items": [{"type": "reasoning"}]}),
            400,
            Some("items[0].type"),
            "only 'message'",
        ),
        (
            "POST",
            "/v1/conversations".to_string(),
            json!({"metadata": {"k": 1}}),
            400,
            Some("metadata.k"),
            "a string",
        ),
        (
            "GET",
            "/v1/conversations/conv_nothere".to_string(),
            Value::Null,
            404,
            None,
            "No conversation",
        ),
        (
            "GET",
            "/v1/conversations/..%2Fx".to_string(),
            Value::Null,
            404,
            None,
            "No conversation",
        ),
        (
            "POST",
            format!("/v1/conversations/{id}/items"),
            json!({}),
            400,
            Some("items"),
            "Missing required",
        ),
        (
            "POST",
            format!("/v1/conversations/{id}"),
            json!({}),
            400,
            Some("metadata"),
            "Missing required",
        ),
        (
            "GET",
            format!("/v1/conversations/{id}/items?limit=0"),
            Value::Null,
            400,
            Some("limit"),
            "from 1 to 100",
        ),
        (
            "GET",
            format!("/v1/conversations/{id}/items/msg_nope"),
            Value::Null,
            404,
            None,
            "no item",
        ),
        (
            "PUT",
            format!("/v1/conversations/{id}"),
            Value::Null,
            405,
            None,
            "PUT",
        ),
        (
            "GET",
            "/v1/conversations".to_string(),
            Value::Null,
            405,
            None,
            "GET",
        ),
    ] {
        assert_error(&req(&h, method, &path, body), status, param, says);
    }
    let r = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "conversation": id, "previous_response_id": "resp_x"}),
    );
    assert_error(&r, 400, Some("conversation"), "cannot be used together");
    let r = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "conversation": 5}),
    );
    assert_error(&r, 400, Some("conversation"), "expected a conversation id");
}

#[test]
fn a_turn_added_while_another_request_writes_keeps_both() {
    let h = gen_fake();
    let (_, conv) = req(
        &h,
        "POST",
        "/v1/conversations",
        json!({"items": [{"role": "user", "content": "a"}]}),
    );
    let id = conv["id"].as_str().unwrap();
    // Another request adds an item between this response's read and its write.
    let key = format!("conv:{id}");
    let mut other: Value = serde_json::from_slice(&h.kv.get(&key).unwrap()).unwrap();
    other["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "message", "role": "user", "id": "msg_other",
        "content": [{"type": "input_text", "text": "b"}]}));
    *h.kv.racing_write.borrow_mut() = Some((key, serde_json::to_vec(&other).unwrap()));
    let (r, _) = respond(
        &h,
        json!({"model": "smol", "input": "c", "conversation": id}),
    );
    assert_eq!(r.status, 200);
    let (_, items) = req(
        &h,
        "GET",
        &format!("/v1/conversations/{id}/items?order=asc"),
        Value::Null,
    );
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["a", "b", "c", "Hello!"]);
}
