//! The admin API: deploy guest components, add, change and remove tenants, and read
//! what each tenant used. Guarded by the admin token (config `admin`), compared as a
//! sha256 digest in constant time.
//!
//! - `GET /admin/tenants`: all tenants with usage
//! - `GET /admin/tenants/{name}`: one tenant
//! - `PUT /admin/tenants/{name}`: create or change settings (JSON: public, path_prefix,
//!   api_keys, api_keys_sha256, models, limits; fields left out keep their values)
//! - `PUT /admin/tenants/{name}/component`: deploy a component (body: the .wasm); creates
//!   the tenant (no keys, all models) if it does not exist
//! - `DELETE /admin/tenants/{name}`: remove a tenant

use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::responses::{self, HttpResponse};
use super::AppState;
use crate::tenants::{keys, TenantSettings};

/// Whether the request carries the admin token (false when there is none).
pub fn has_admin_token(state: &AppState, headers: &http::HeaderMap) -> bool {
    match (&state.admin_token, keys::from_headers(headers)) {
        (Some(expected), Some(token)) => keys::constant_time_eq(&keys::hash(token), expected),
        _ => false,
    }
}

/// Whether the request may see every tenant (`/status`, `/metrics`): it carries the
/// admin token, or the host has neither an admin token nor a tenant with keys, so
/// whoever reaches it is its operator (`just run`).
pub fn is_operator(state: &AppState, headers: &http::HeaderMap) -> bool {
    has_admin_token(state, headers)
        || (state.admin_token.is_none() && !state.tenants.all().iter().any(|t| t.has_keys()))
}

/// The refusal for a request that may not use the admin API (it is off, or the request
/// lacks its token); None when it may.
pub fn refusal(state: &AppState, headers: &http::HeaderMap) -> Option<HttpResponse> {
    if state.admin_token.is_none() {
        return Some(responses::error(
            403,
            "the admin API is disabled: set NNHOST_ADMIN_TOKEN (or admin.token_sha256)",
            None,
            Some("admin_disabled"),
        ));
    }
    if !has_admin_token(state, headers) {
        return Some(responses::error(
            401,
            "a valid admin token is required",
            None,
            Some("invalid_admin_token"),
        ));
    }
    None
}

pub async fn handle(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> HttpResponse {
    if let Some(refused) = refusal(state, headers) {
        return refused;
    }
    let parts: Vec<&str> = path
        .trim_start_matches("/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["tenants"]) => {
            let tenants: Vec<_> = state.tenants.all().iter().map(|t| t.to_json()).collect();
            responses::json(200, &json!({"tenants": tenants}))
        }
        (&Method::GET, ["tenants", name]) => match state.tenants.get(name) {
            Some(t) => responses::json(200, &t.to_json()),
            None => not_found(name),
        },
        (&Method::PUT, ["tenants", name]) => {
            // Fields left out keep their current values (or the defaults for a new tenant).
            let mut merged = match state.tenants.get(name) {
                Some(t) => serde_json::to_value(&t.settings).unwrap_or_default(),
                None => json!({"models": ["*"]}),
            };
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(patch)) => {
                    if let Some(current) = merged.as_object_mut() {
                        // New keys replace the old ones rather than adding to them.
                        if patch.contains_key("api_keys") || patch.contains_key("api_keys_sha256") {
                            current.remove("api_keys");
                            current.remove("api_keys_sha256");
                        }
                        current.extend(patch);
                    }
                }
                Ok(_) => {
                    return responses::error(
                        400,
                        "tenant settings must be a JSON object",
                        None,
                        None,
                    )
                }
                Err(e) => return responses::error(400, format!("invalid JSON: {e}"), None, None),
            }
            let settings: TenantSettings = match serde_json::from_value(merged) {
                Ok(s) => s,
                Err(e) => {
                    return responses::error(
                        400,
                        format!("invalid tenant settings: {e}"),
                        None,
                        None,
                    )
                }
            };
            match state.tenants.deploy(name, Some(settings), None) {
                Ok(t) => responses::json(200, &t.to_json()),
                Err(e) => responses::error(400, format!("{e:#}"), None, None),
            }
        }
        (&Method::PUT, ["tenants", name, "component"]) => {
            // Compiling takes a while: off the async workers.
            let tenants = state.tenants.clone();
            let name = name.to_string();
            let deployed =
                tokio::task::spawn_blocking(move || tenants.deploy(&name, None, Some(&body))).await;
            match deployed {
                Ok(Ok(t)) => responses::json(200, &t.to_json()),
                Ok(Err(e)) => responses::error(
                    400,
                    format!("the component was not deployed: {e:#}"),
                    None,
                    Some("invalid_component"),
                ),
                Err(e) => responses::error(500, format!("deploy failed: {e}"), None, None),
            }
        }
        (&Method::DELETE, ["tenants", name]) => {
            if state.tenants.remove(name) {
                responses::json(200, &json!({"deleted": name}))
            } else {
                not_found(name)
            }
        }
        _ => responses::error(
            404,
            format!("unknown admin endpoint {method} {path}"),
            None,
            Some("unknown_url"),
        ),
    }
}

fn not_found(name: &str) -> HttpResponse {
    responses::error(
        404,
        format!("no tenant named {name:?}"),
        None,
        Some("tenant_not_found"),
    )
}
