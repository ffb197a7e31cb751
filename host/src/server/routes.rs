//! Routing: the host's own endpoints first (health, metrics, status, `/v2`), then
//! the tenant's guest. Every request is counted by route, tenant and status.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::json;

use super::responses::{self, HttpResponse};
use super::{admin, body, request_id, v2, AppState};
use crate::metrics::{metrics, route_label};
use crate::sandbox;
use crate::tenants::keys;
use crate::tenants::usage::Usage;
use crate::tenants::AuthError;
use crate::tenants::Tenant;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

pub async fn handle(
    state: Arc<AppState>,
    mut req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let route = route_label(req.uri().path());
    let id = request_id::take_or_make(req.headers_mut());
    let span = tracing::info_span!("request", id = id.to_str().unwrap_or("?"), %route);
    let mut response = respond(&state, req, route).instrument(span).await;
    response.headers_mut().insert(request_id::HEADER, id);
    Ok(response)
}

async fn respond(
    state: &AppState,
    mut req: Request<Incoming>,
    route: &'static str,
) -> HttpResponse {
    let started = Instant::now();
    // Whatever answers GET answers HEAD (RFC 9110 §9.3.2), with the GET response's
    // headers and no body (HTTP/2 must not send one at all).
    let head = req.method() == Method::HEAD;
    if head {
        *req.method_mut() = Method::GET;
    }
    let grant = state.cors.grant(req.headers(), req.uri().path());
    let (tenant, mut response) =
        if state
            .cors
            .is_preflight(req.method(), req.headers(), req.uri().path())
        {
            let preflight = state.cors.preflight(grant.as_ref(), req.headers());
            ("-".to_string(), preflight)
        } else {
            dispatch(state, req).await
        };
    if let Some(grant) = &grant {
        grant.apply(&mut response);
    }
    if head {
        without_body(&mut response);
    }
    let status = response.status().as_u16().to_string();
    metrics()
        .http_requests
        .with_label_values(&[route, &tenant, &status])
        .inc();
    metrics()
        .http_latency
        .with_label_values(&[route, &tenant])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn without_body(response: &mut HttpResponse) {
    let length = http_body::Body::size_hint(response.body()).exact();
    if let Some(length) = length {
        response
            .headers_mut()
            .entry(hyper::header::CONTENT_LENGTH)
            .or_insert(length.into());
    }
    *response.body_mut() = responses::full(Bytes::new());
}

async fn dispatch(state: &AppState, req: Request<Incoming>) -> (String, HttpResponse) {
    let host = |r| ("-".to_string(), r);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => return host(responses::json(200, &json!({"status": "ok"}))),
        (&Method::GET, "/ready") => return host(ready(state)),
        (&Method::GET, "/metrics") => {
            if !state.config.server.public_metrics && !admin::is_operator(state, req.headers()) {
                return host(responses::error(
                    401,
                    "/metrics names every tenant: it needs the admin token (or [server] public_metrics = true)",
                    None,
                    Some("invalid_admin_token"),
                ));
            }
            let stores = &metrics().tenant_store_bytes;
            stores.reset(); // tenants removed since the last scrape disappear
            for tenant in state.tenants.all() {
                let bytes = tenant.store.size().1;
                stores
                    .with_label_values(&[&tenant.name])
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            return host(responses::text(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics().render(),
            ));
        }
        (&Method::GET, "/status") => {
            if admin::is_operator(state, req.headers()) {
                return host(responses::json(200, &status(state, None)));
            }
            // Anyone else sees what their own tenant may use, and its own usage only.
            return match state
                .tenants
                .authenticate(keys::from_headers(req.headers()), "/status")
            {
                Ok(tenant) => host(responses::json(200, &status(state, Some(&tenant)))),
                Err(e) => host(unauthorized(e)),
            };
        }
        _ => {}
    }
    if req.uri().path() == "/admin" || req.uri().path().starts_with("/admin/") {
        // Checked before the body is read: only the operator may upload, and its
        // uploads (components) are not counted against the body budget.
        if let Some(refused) = admin::refusal(state, req.headers()) {
            return ("-".into(), refused);
        }
        let (mut parts, body) = req.into_parts();
        let limit = state.config.sandbox.max_component_bytes;
        let timeout = state.config.server.body_read_timeout_ms;
        let body = match body::read(&mut parts, body, limit, timeout, None).await {
            Ok((body, _)) => body,
            Err(e) => return ("-".into(), e.into_response()),
        };
        return (
            "-".into(),
            admin::handle(state, &parts.method, parts.uri.path(), &parts.headers, body).await,
        );
    }
    let tenant = match state
        .tenants
        .authenticate(keys::from_headers(req.headers()), req.uri().path())
    {
        Ok(tenant) => tenant,
        Err(e) => return ("-".into(), unauthorized(e)),
    };
    let name = tenant.name.clone();
    Usage::add(&tenant.usage.requests, 1);
    if let Some(Err(wait)) = tenant.rate.as_ref().map(|rate| rate.try_take()) {
        let message = format!(
            "Too many requests per second for this API key (limit {})",
            tenant.settings.limits.max_requests_per_second
        );
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        return (name, limit_hit(&tenant, message, seconds));
    }
    let limit = tenant
        .settings
        .limits
        .max_body_bytes
        .unwrap_or(usize::MAX)
        .min(state.config.server.max_body_bytes);
    let (mut parts, body) = req.into_parts();
    if parts.uri.authority().is_none() && !parts.headers.contains_key(hyper::header::HOST) {
        // HTTP/1.1 requires Host; HTTP/1.0 clients may omit it (the guest needs an authority).
        if parts.version == http::Version::HTTP_11 {
            return (
                name,
                responses::error(
                    400,
                    "the request has no Host header",
                    None,
                    Some("missing_host"),
                ),
            );
        }
        parts.headers.insert(
            hyper::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    let timeout = state.config.server.body_read_timeout_ms;
    // `_reserved` holds the body's share of the host's body budget until the guest is done.
    let (body, _reserved) =
        match body::read(&mut parts, body, limit, timeout, Some(&state.body_budget)).await {
            Ok(read) => read,
            Err(e) => return (name, e.into_response()),
        };
    // Taken once the body is in, so clients trickling their uploads do not hold the
    // tenant's slots; the permit lives until the guest is done, streaming included.
    let Ok(permit) = tenant.concurrency.clone().try_acquire_owned() else {
        let message = format!(
            "Too many concurrent requests for this API key (limit {})",
            tenant.settings.limits.max_concurrent_requests
        );
        return (name, limit_hit(&tenant, message, 1));
    };
    // Cohere's v2 rerank shares the prefix but not the protocol: the guest answers it.
    let path = parts.uri.path();
    if (path == "/v2" || path.starts_with("/v2/")) && path != "/v2/rerank" {
        let response = v2::handle(
            &tenant.access,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            body,
        )
        .await;
        return (name, response);
    }
    let response = to_guest(&tenant, Request::from_parts(parts, Full::new(body)), permit).await;
    if response.status().is_server_error() || response.status().as_u16() == 429 {
        Usage::add(&tenant.usage.errors, 1);
    }
    (name, response)
}

fn ready(state: &AppState) -> HttpResponse {
    let models: Vec<_> = state.registry.all().map(|m| m.info.id.clone()).collect();
    responses::json(200, &json!({"status": "ready", "models": models}))
}

fn unauthorized(e: AuthError) -> HttpResponse {
    let message = match e {
        AuthError::Missing => {
            "You didn't provide an API key. Provide it in the Authorization header (Bearer <key>)."
        }
        AuthError::Invalid => "Incorrect API key provided.",
    };
    responses::error(401, message, None, Some("invalid_api_key"))
}

/// The host's state for the console and operators: every model and tenant, or, for
/// a tenant's caller, the models it may use and its own usage.
fn status(state: &AppState, only: Option<&Tenant>) -> serde_json::Value {
    let models: Vec<_> = state
        .registry
        .all()
        .filter(|m| only.is_none_or(|t| t.access.get(&m.info.id).is_ok()))
        .map(|m| {
            json!({
                "id": m.info.id,
                "kind": m.info.kind.as_str(),
                "routing": m.router().map(|r| r.status()),
            })
        })
        .collect();
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "models": models,
        "tenants": state.tenants.all().iter().filter(|t| only.is_none_or(|o| o.name == t.name)).map(|t| json!({
            "name": t.name,
            "public": t.public,
            "usage": t.usage.to_json(),
        })).collect::<Vec<_>>(),
    })
}

async fn to_guest(
    tenant: &Tenant,
    request: Request<Full<Bytes>>,
    permit: OwnedSemaphorePermit,
) -> HttpResponse {
    match sandbox::handle_request(
        &tenant.guest,
        tenant.new_state(),
        &tenant.limits,
        request,
        permit,
    )
    .await
    {
        Ok(response) => response,
        Err(failure) => {
            if failure.is_misbehaviour() {
                tenant.usage.conduct.failure();
            }
            let code = match failure.http_status() {
                504 => "timeout",
                503 => "guest_unavailable",
                _ => "guest_error",
            };
            metrics()
                .guest_failures
                .with_label_values(&[&tenant.name, code])
                .inc();
            if code == "timeout" {
                Usage::add(&tenant.usage.limit_hits, 1);
            }
            responses::error(failure.http_status(), failure.to_string(), None, Some(code))
        }
    }
}

/// A tenant's rate or concurrency limit: 429 `rate_limit_exceeded` with `retry-after`,
/// counted as a limit hit.
fn limit_hit(tenant: &Tenant, message: String, retry_after_seconds: u64) -> HttpResponse {
    Usage::add(&tenant.usage.limit_hits, 1);
    let mut r = responses::error(429, message, None, Some("rate_limit_exceeded"));
    r.headers_mut()
        .insert("retry-after", http::HeaderValue::from(retry_after_seconds));
    r
}
