//! OpenAI-shaped errors: `{"error":{"message","type","param","code"}}` plus an
//! HTTP status, and the mapping from the host's WIT `error` record.

use crate::host::{ErrorCode, HostError};
use crate::http::Response;
use serde::Serialize;

pub const INVALID_REQUEST: &str = "invalid_request_error";
pub const SERVER_ERROR: &str = "server_error";
pub const RATE_LIMIT: &str = "rate_limit_error";

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Extra response headers (`allow`, `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, message).param(param)
    }

    /// 400 `invalid_request_error` about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            INVALID_REQUEST,
            format!("The model '{model}' does not exist"),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn unknown_url(method: &str, path: &str) -> Self {
        Self::new(
            404,
            INVALID_REQUEST,
            format!(
                "Unknown request URL: {method} {path}. Please check the URL for typos, \
                 or see GET /v1/models for what this server offers."
            ),
        )
        .code("unknown_url")
    }

    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        let mut e = Self::new(
            405,
            INVALID_REQUEST,
            format!("Method not allowed: {method} {path}. Use {allow} {path}."),
        )
        .code("method_not_allowed");
        e.headers.push(("allow", allow.to_string()));
        e
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            INVALID_REQUEST,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .code("request_too_large")
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(500, SERVER_ERROR, message)
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// `{"error":{"message","type","param","code"}}`, in OpenAI's key order.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    pub fn into_response(self) -> Response {
        let mut r = Response::json(self.status, self.to_json());
        for (name, value) in self.headers {
            r.headers.push((name.to_string(), value));
        }
        r
    }
}

/// Maps the host's error record: the host's message and param are passed through
/// (they are documented as safe to show to API clients).
impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let (status, kind, code, default_param) = match e.code {
            ErrorCode::InvalidArgument => (400, INVALID_REQUEST, None, None),
            ErrorCode::NotFound => (404, INVALID_REQUEST, Some("model_not_found"), None),
            ErrorCode::ContextLengthExceeded => (
                400,
                INVALID_REQUEST,
                Some("context_length_exceeded"),
                Some("input"),
            ),
            ErrorCode::Unsupported => (400, INVALID_REQUEST, Some("unsupported"), None),
            ErrorCode::ResourceExhausted => (429, RATE_LIMIT, Some("resource_exhausted"), None),
            // A full queue: back-pressure the client retries after a moment (429 + Retry-After).
            ErrorCode::Busy => (429, RATE_LIMIT, Some("server_busy"), None),
            ErrorCode::BackendError | ErrorCode::Internal => (500, SERVER_ERROR, None, None),
        };
        let message = if e.message.is_empty() {
            format!(
                "The host reported an error ({:?}) without a message.",
                e.code
            )
        } else {
            e.message
        };
        let mut out = ApiError::new(status, kind, message);
        out.param = e.param.or(default_param.map(str::to_string));
        out.code = code;
        if matches!(e.code, ErrorCode::Busy) {
            out.headers.push(("retry-after", "1".to_string()));
        }
        out
    }
}
