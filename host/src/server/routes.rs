//! Routing: the host's own endpoints first (health, metrics, status, `/v2`), then
//! the tenant's guest. Every request is counted by route, tenant and status.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::json;

use super::responses::{self, HttpResponse};
use super::{v2, AppState};
use crate::metrics::{metrics, route_label};
use crate::sandbox;
use crate::tenants::Tenant;

pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let route = route_label(req.uri().path());
    let (tenant, response) = dispatch(&state, req).await;
    let status = response.status().as_u16().to_string();
    metrics().http_requests.with_label_values(&[route, &tenant, &status]).inc();
    metrics().http_latency.with_label_values(&[route, &tenant]).observe(started.elapsed().as_secs_f64());
    Ok(response)
}

async fn dispatch(state: &AppState, req: Request<Incoming>) -> (String, HttpResponse) {
    let host = |r| ("-".to_string(), r);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => return host(responses::json(200, &json!({"status": "ok"}))),
        (&Method::GET, "/ready") => return host(ready(state)),
        (&Method::GET, "/metrics") => {
            return host(responses::text(200, "text/plain; version=0.0.4; charset=utf-8", metrics().render()))
        }
        (&Method::GET, "/status") => return host(responses::json(200, &status(state))),
        _ => {}
    }
    let Some(tenant) = state.tenants.public() else {
        let r = responses::error(
            401,
            "You didn't provide an API key. Provide it in the Authorization header (Bearer <key>).",
            None,
            Some("invalid_api_key"),
        );
        return ("-".into(), r);
    };
    let name = tenant.name.clone();
    let (parts, body) = req.into_parts();
    let body = match read_body(state, &parts, body).await {
        Ok(body) => body,
        Err(response) => return (name, response),
    };
    if parts.uri.path() == "/v2" || parts.uri.path().starts_with("/v2/") {
        let response = v2::handle(&tenant.access, &parts.method, parts.uri.path(), &parts.headers, body).await;
        return (name, response);
    }
    (name, to_guest(&tenant, Request::from_parts(parts, Full::new(body))).await)
}

fn ready(state: &AppState) -> HttpResponse {
    let models: Vec<_> = state.registry.all().map(|m| m.info.id.clone()).collect();
    responses::json(200, &json!({"status": "ready", "models": models}))
}

fn status(state: &AppState) -> serde_json::Value {
    let models: Vec<_> = state
        .registry
        .all()
        .map(|m| {
            json!({
                "id": m.info.id,
                "kind": m.info.kind.as_str(),
                "routing": m.embedding().map(|e| e.router.status()),
            })
        })
        .collect();
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "models": models,
        "tenants": state.tenants.names(),
    })
}

/// Reads the whole body (up to the limit) before any guest runs, so an oversized
/// upload never costs an instance.
async fn read_body(state: &AppState, parts: &http::request::Parts, body: Incoming) -> Result<Bytes, HttpResponse> {
    let limit = state.config.server.max_body_bytes;
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) => Err(responses::error(400, format!("could not read the request body: {e}"), None, None)),
    }
}

async fn to_guest(tenant: &Tenant, request: Request<Full<Bytes>>) -> HttpResponse {
    match sandbox::handle_request(&tenant.guest, tenant.new_state(), &tenant.limits, request).await {
        Ok(response) => response,
        Err(failure) => {
            let code = match failure.http_status() {
                504 => "timeout",
                503 => "guest_unavailable",
                _ => "guest_error",
            };
            metrics().guest_failures.with_label_values(&[&tenant.name, code]).inc();
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
