//! The smallest nnhost guest: `GET /` answers
//! `{"hello":"from a custom guest","models":[...]}` with the ids of the models
//! this tenant may use. See docs/WRITING_GUESTS.md.

// The handler is exported on wasm32 only; `cargo test` also builds this natively.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// Bindings for nnhost's imports (`world router` in wit/inference.wit).
wit_bindgen::generate!({
    path: "../../../wit",
    world: "router",
});

use nnhost::inference::models;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) =
            if matches!(request.method(), Method::Get) && (path == "/" || path.starts_with("/?")) {
                let ids: Vec<String> = models::list_models().into_iter().map(|m| m.id).collect();
                (
                    200,
                    serde_json::json!({ "hello": "from a custom guest", "models": ids }),
                )
            } else {
                (
                    404,
                    serde_json::json!({ "error": {
                "message": "Not found: only GET / exists here.",
                "type": "invalid_request_error", "param": null, "code": "unknown_url" } }),
                )
            };
        send_json(response_out, status, &body);
    }
}

/// Sends a JSON response with a `content-length`.
fn send_json(out: ResponseOutparam, status: u16, value: &serde_json::Value) {
    let body = value.to_string().into_bytes();
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("stream is taken once");
    // blocking-write-and-flush takes at most 4096 bytes per call.
    for piece in body.chunks(4096) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return; // the client went away
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

#[cfg(target_arch = "wasm32")]
wasip2::http::proxy::export!(Hello);
