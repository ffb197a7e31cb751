//! Stored responses: kept in the tenant's store unless `store` is false, continued
//! with `previous_response_id`, read and deleted under `/v1/responses/{id}`.

use super::responses::{prompt_of, respond};
use super::support::{done, gen_fake, post, text};
use super::*;

fn get(h: &Fake, path: &str) -> (Response, Value) {
    call(h, "GET", path, "")
}

#[test]
fn a_stored_response_is_read_back_and_listed() {
    let h = gen_fake();
    let (_, first) = respond(
        &h,
        json!({"model": "smol", "input": "Hi", "metadata": {"k": "v"}}),
    );
    let id = first["id"].as_str().unwrap();
    assert_eq!(first["store"], true);
    let (r, back) = get(&h, &format!("/v1/responses/{id}"));
    assert_eq!(r.status, 200, "{back}");
    assert_eq!(back, first);
    let (r, items) = get(&h, &format!("/v1/responses/{id}/input_items"));
    assert_eq!(r.status, 200, "{items}");
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["role"], "user");
    assert_eq!(items["data"][0]["content"][0]["text"], "Hi");
    assert_eq!(items["first_id"], items["data"][0]["id"]);
}

#[test]
fn input_items_come_in_pages() {
    let h = gen_fake();
    let input = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}]);
    let (_, made) = respond(&h, json!({"model": "smol", "input": input}));
    let id = made["id"].as_str().unwrap();
    let texts = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, newest) = get(&h, &format!("/v1/responses/{id}/input_items?limit=2"));
    assert_eq!(
        (texts(&newest), newest["has_more"].as_bool()),
        (vec!["c".into(), "b".into()], Some(true))
    );
    let after = newest["last_id"].as_str().unwrap();
    let (_, rest) = get(
        &h,
        &format!("/v1/responses/{id}/input_items?limit=2&after={after}"),
    );
    assert_eq!(
        (texts(&rest), rest["has_more"].as_bool()),
        (vec!["a".to_string()], Some(false))
    );
    let (_, oldest) = get(
        &h,
        &format!("/v1/responses/{id}/input_items?order=asc&include[]=x"),
    );
    assert_eq!(texts(&oldest), ["a", "b", "c"]);
    let (r, _) = get(&h, &format!("/v1/responses/{id}/input_items?limit=500"));
    assert_eq!(r.status, 400);
}

#[test]
fn previous_response_id_continues_the_conversation() {
    let h = gen_fake();
    let (_, first) = respond(
        &h,
        json!({"model": "smol", "instructions": "Be brief.", "input": "Hi"}),
    );
    let id = first["id"].as_str().unwrap();
    let (r, second) = respond(
        &h,
        json!({"model": "smol", "input": "And then?", "previous_response_id": id}),
    );
    assert_eq!(r.status, 200, "{second}");
    assert_eq!(second["previous_response_id"], id);
    // Instructions are not carried over (as at OpenAI); the turns are.
    assert_eq!(
        prompt_of(&h, 1),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
    );
    // A third turn sees both earlier ones.
    let second_id = second["id"].as_str().unwrap();
    respond(
        &h,
        json!({"model": "smol", "input": "Bye", "previous_response_id": second_id}),
    );
    let third = prompt_of(&h, 2);
    assert!(
        third.contains("Hi") && third.contains("And then?") && third.contains("Bye"),
        "{third}"
    );
    // Its own input items are only what it sent.
    let (_, items) = get(&h, &format!("/v1/responses/{second_id}/input_items"));
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
}

#[test]
fn unstored_unknown_and_deleted_responses_are_404() {
    let h = gen_fake();
    let (_, unstored) = respond(&h, json!({"model": "smol", "input": "Hi", "store": false}));
    assert_eq!(unstored["store"], false);
    let id = unstored["id"].as_str().unwrap();
    assert_error(
        &get(&h, &format!("/v1/responses/{id}")),
        404,
        None,
        "No response with id",
    );
    assert_error(
        &respond(
            &h,
            json!({"model": "smol", "input": "Hi", "previous_response_id": id}),
        ),
        404,
        Some("previous_response_id"),
        &format!("'{id}'"),
    );
    let (_, kept) = respond(&h, json!({"model": "smol", "input": "Hi"}));
    let path = format!("/v1/responses/{}", kept["id"].as_str().unwrap());
    let (r, v) = call(&h, "DELETE", &path, "");
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        (v["deleted"].as_bool(), v["object"].as_str()),
        (Some(true), Some("response"))
    );
    assert_error(&get(&h, &path), 404, None, "No response");
    assert_error(&call(&h, "DELETE", &path, ""), 404, None, "No response");
    assert_error(
        &get(&h, "/v1/responses/../../etc"),
        404,
        None,
        "No response",
    );
    let (r, _) = call(&h, "PUT", &path, "");
    assert_eq!(r.status, 405);
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "allow" && v == "GET, DELETE"));
}

#[test]
fn a_streamed_response_is_stored_when_it_completes() {
    let mut h = gen_fake();
    h.script = vec![text("Hel"), text("lo!"), done(FinishReason::Stop, None)];
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "smol", "input": "Hi", "stream": true}),
    );
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body).unwrap();
    let id = body
        .split("\"id\":\"resp_")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (r, back) = get(&h, &format!("/v1/responses/resp_{id}"));
    assert_eq!(r.status, 200, "{back}");
    assert_eq!(back["status"], "completed");
    assert_eq!(back["output"][0]["content"][0]["text"], "Hello!");
}
