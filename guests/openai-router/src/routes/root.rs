//! `GET /`: a pointer to the API (the web console is a separate guest).

use crate::http::Response;

pub fn handle() -> Response {
    let body = concat!(
        r#"{"object":"nnhost","message":"OpenAI-compatible API. See GET /v1/models for the models served here.","#,
        r#""endpoints":["GET /v1/models","GET /v1/models/{id}","POST /v1/embeddings","#,
        r#""POST /v1/chat/completions","POST /v1/completions","POST /v1/responses"]}"#
    );
    Response::json(200, body.as_bytes().to_vec())
}
