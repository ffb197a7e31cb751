//! Routing: the host's own endpoints first, then the tenant's guest.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request};

use super::responses::{self, HttpResponse};
use super::AppState;
use crate::sandbox;

pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => responses::json(200, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/ready") => ready(&state),
        _ => to_guest(&state, req).await,
    };
    Ok(response)
}

fn ready(state: &AppState) -> HttpResponse {
    let models: Vec<_> = state.registry.all().map(|m| m.info.id.clone()).collect();
    responses::json(200, &serde_json::json!({"status": "ready", "models": models}))
}

async fn to_guest(state: &AppState, req: Request<Incoming>) -> HttpResponse {
    let Some(tenant) = state.tenants.public() else {
        return responses::error(
            401,
            "You didn't provide an API key. Provide it in the Authorization header (Bearer <key>).",
            None,
            Some("invalid_api_key"),
        );
    };
    let limit = state.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    // The whole body is read (up to the limit) before any guest runs, so an
    // oversized upload never costs an instance.
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(limit),
        Err(e) => return responses::error(400, format!("could not read the request body: {e}"), None, None),
    };
    let request = Request::from_parts(parts, Full::<Bytes>::new(body));
    match sandbox::handle_request(&tenant.guest, tenant.new_state(), &tenant.limits, request).await {
        Ok(response) => response,
        Err(failure) => {
            let code = match failure.http_status() {
                504 => "timeout",
                503 => "guest_unavailable",
                _ => "guest_error",
            };
            responses::error(failure.http_status(), failure.to_string(), None, Some(code))
        }
    }
}

fn too_large(limit: usize) -> HttpResponse {
    responses::error(
        413,
        format!("The request body is larger than the limit of {limit} bytes"),
        None,
        Some("request_too_large"),
    )
}
