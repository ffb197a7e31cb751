//! Responses the host writes itself, errors in OpenAI's shape.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub type HttpResponse = Response<HyperOutgoingBody>;

pub fn full(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(value).unwrap_or_default()))
        .unwrap()
}

pub fn text(status: u16, content_type: &str, body: String) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// `{"error":{"message","type","param","code"}}` with the OpenAI `type` for the status.
pub fn error(
    status: u16,
    message: impl Into<String>,
    param: Option<&str>,
    code: Option<&str>,
) -> HttpResponse {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        400 | 404 | 405 | 408 | 413 | 415 | 422 => "invalid_request_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ if status >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json(
        status,
        &serde_json::json!({
            "error": {"message": message.into(), "type": kind, "param": param, "code": code}
        }),
    )
}
