//! nnhost's default tenant app: an OpenAI-compatible HTTP router.
//!
//! The component exports `wasi:http/incoming-handler` (through `wasip2`'s proxy
//! export) and imports `nnhost:inference` (the `router` world of `wit/inference.wit`)
//! for models, embeddings and text generation. Everything except [`http`]'s wasi
//! glue and [`host::WitHost`] is pure Rust over [`host::Host`], so `cargo test`
//! runs it on the native target with a fake host (and a fake generation stream).
//!
//! Chat templates are rendered here, in the sandbox (minijinja); streamed
//! responses (`"stream": true`) are written as server-sent events while the host
//! generates ([`http::Reply::Stream`]).
//!
//! Adding an endpoint (e.g. `/v1/responses`): a module under `routes/`, a
//! [`routes::Route`] variant with its path and allowed method, one arm in [`dispatch`].

pub mod errors;
pub mod host;
pub mod http;
pub mod routes;

/// Bindings for the nnhost imports (`world router` only imports).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "router",
    });
}

use errors::ApiError;
use http::Reply;
use routes::Route;

/// The largest request body the guest reads (the host enforces a smaller limit
/// before the guest runs; this is the guest's own backstop).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Routes one request. `path_with_query` is the raw request target; `read_body`
/// is called at most once, only by routes that take a body. A streaming reply
/// (`"stream": true`) still holds the generation: the caller drives it while sending.
pub fn dispatch(
    method: &str,
    path_with_query: &str,
    host: &dyn host::Host,
    read_body: &mut dyn FnMut() -> Result<Vec<u8>, ApiError>,
) -> Reply {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    let Some(route) = Route::match_path(path) else {
        return ApiError::unknown_url(method, path).into_response().into();
    };
    if !route.allows(method) {
        return ApiError::method_not_allowed(method, path, route.methods())
            .into_response()
            .into();
    }
    let result = match route {
        Route::Root => Ok(routes::root::handle().into()),
        Route::Models => Ok(routes::models::list(host).into()),
        Route::Model(raw_id) => routes::models::get(host, raw_id).map(Reply::from),
        Route::Embeddings => read_body()
            .and_then(|body| routes::embeddings::handle(host, &body))
            .map(Reply::from),
        Route::ChatCompletions if method == "GET" => {
            routes::chat::stored::list(&*host.store(), query).map(Reply::from)
        }
        Route::ChatCompletions => read_body().and_then(|body| routes::chat::handle(host, &body)),
        Route::StoredChatCompletion(id) => {
            let store = host.store();
            match method {
                "DELETE" => routes::chat::stored::delete(&*store, id),
                "POST" => {
                    read_body().and_then(|body| routes::chat::stored::update(&*store, id, &body))
                }
                _ => routes::chat::stored::get(&*store, id),
            }
            .map(Reply::from)
        }
        Route::Conversations => read_body()
            .and_then(|body| routes::conversations::create(host, &body))
            .map(Reply::from),
        Route::Conversation(id) => body_if_post(method, read_body)
            .and_then(|body| {
                routes::conversations::conversation(&*host.store(), method, id, body.as_deref())
            })
            .map(Reply::from),
        Route::ConversationItems(id) => body_if_post(method, read_body)
            .and_then(|body| {
                routes::conversations::items(&*host.store(), id, query, body.as_deref())
            })
            .map(Reply::from),
        Route::ConversationItem(id, item) => {
            routes::conversations::item(&*host.store(), method, id, item).map(Reply::from)
        }
        Route::StoredChatMessages(id) => {
            routes::chat::stored::messages(&*host.store(), id, query).map(Reply::from)
        }
        Route::Completions => read_body().and_then(|body| routes::completions::handle(host, &body)),
        Route::Responses => read_body().and_then(|body| routes::responses::handle(host, &body)),
        Route::StoredResponse(id) if method == "DELETE" => {
            routes::responses::stored::delete(&*host.store(), id).map(Reply::from)
        }
        Route::StoredResponse(id) => {
            routes::responses::stored::get(&*host.store(), id).map(Reply::from)
        }
        Route::Tokenize => read_body()
            .and_then(|body| routes::tokenize::tokenize(host, &body))
            .map(Reply::from),
        Route::Rerank => read_body()
            .and_then(|body| routes::rerank::rerank(host, &body))
            .map(Reply::from),
        Route::Score => read_body()
            .and_then(|body| routes::rerank::score(host, &body))
            .map(Reply::from),
        Route::Detokenize => read_body()
            .and_then(|body| routes::tokenize::detokenize(host, &body))
            .map(Reply::from),
        Route::ResponseInputItems(id) => {
            routes::responses::stored::input_items(&*host.store(), id, query).map(Reply::from)
        }
    };
    result.unwrap_or_else(|e| e.into_response().into())
}

/// The body of a `POST` (routes whose `GET` and `DELETE` take none).
fn body_if_post(
    method: &str,
    read_body: &mut dyn FnMut() -> Result<Vec<u8>, ApiError>,
) -> Result<Option<Vec<u8>>, ApiError> {
    if method == "POST" {
        read_body().map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    use wasip2::exports::http::incoming_handler::Guest;
    use wasip2::http::types::{IncomingRequest, ResponseOutparam};

    struct Component;

    impl Guest for Component {
        fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
            let method = crate::http::method_name(&request.method());
            let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
            let mut read_body = || crate::http::read_body(&request, crate::MAX_BODY_BYTES);
            let reply = crate::dispatch(&method, &target, &crate::host::WitHost, &mut read_body);
            crate::http::send_reply(response_out, reply);
        }
    }

    wasip2::http::proxy::export!(Component);
}

#[cfg(test)]
mod tests;
