//! nnhost's web console: serves a small single-page app (`assets/`, compiled in) that
//! talks to the host's HTTP API on the same origin. Deployed as its own public tenant
//! at path prefix "/" (the OpenAI router keeps "/v1"); see host/config/default.toml.
//!
//! The guest only serves files: the playground, the embeddings explorer and the status
//! panel run in the browser and call `/v1/...`, `/status` and `/health` themselves.

// The handler is exported on wasm32 only; `cargo test` also builds this natively.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const LIKELIHOOD_JS: &str = include_str!("../assets/likelihood.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Everything the page needs comes from this origin (no CDN, fonts or inline script).
const CSP: &str = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A response chosen by [`route`]: status, content type and body.
#[derive(Debug, PartialEq)]
pub struct Asset {
    pub status: u16,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Picks the response for a method and a path (the query string is ignored).
pub fn route(method: &Method, path_with_query: &str) -> Asset {
    let path = path_with_query.split(['?', '#']).next().unwrap_or("");
    if !matches!(method, Method::Get | Method::Head) {
        return Asset {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            body: "Method not allowed: the console only answers GET.\n",
        };
    }
    match path {
        "/" | "/index.html" => Asset {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: INDEX_HTML,
        },
        "/app.js" => Asset {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: APP_JS,
        },
        "/likelihood.js" => Asset {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: LIKELIHOOD_JS,
        },
        "/style.css" => Asset {
            status: 200,
            content_type: "text/css; charset=utf-8",
            body: STYLE_CSS,
        },
        _ => Asset {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: "Not found. The console is at /, the OpenAI-compatible API at /v1.\n",
        },
    }
}

struct Console;

impl wasip2::exports::http::incoming_handler::Guest for Console {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = request.method();
        let asset = route(&method, &request.path_with_query().unwrap_or_default());
        let body = if matches!(method, Method::Head) {
            ""
        } else {
            asset.body
        };
        let mut headers = vec![
            (
                "content-type".to_string(),
                asset.content_type.as_bytes().to_vec(),
            ),
            (
                "content-length".to_string(),
                asset.body.len().to_string().into_bytes(),
            ),
            ("cache-control".to_string(), b"no-cache".to_vec()),
            ("x-content-type-options".to_string(), b"nosniff".to_vec()),
        ];
        if asset.content_type.starts_with("text/html") {
            headers.push((
                "content-security-policy".to_string(),
                CSP.as_bytes().to_vec(),
            ));
        }
        if asset.status == 405 {
            headers.push(("allow".to_string(), b"GET, HEAD".to_vec()));
        }
        let Ok(fields) = Fields::from_list(&headers) else {
            return;
        };
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(asset.status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        let Ok(stream) = outgoing.write() else { return };
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for piece in body.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(piece).is_err() {
                return; // the client went away
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

#[cfg(target_arch = "wasm32")]
wasip2::http::proxy::export!(Console);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_assets_with_their_types() {
        let index = route(&Method::Get, "/");
        assert_eq!(
            (index.status, index.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert!(index.body.contains("app.js") && index.body.contains("style.css"));
        assert!(index.body.contains("likelihood.js"));
        assert_eq!(route(&Method::Get, "/likelihood.js").body, LIKELIHOOD_JS);
        assert_eq!(route(&Method::Get, "/?tab=status").body, INDEX_HTML);
        assert_eq!(
            route(&Method::Get, "/app.js").content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            route(&Method::Get, "/style.css").content_type,
            "text/css; charset=utf-8"
        );
        assert_eq!(route(&Method::Head, "/style.css").status, 200);
    }

    #[test]
    fn everything_else_is_404_or_405() {
        for path in [
            "/favicon.ico",
            "/app.js/",
            "/assets/app.js",
            "/../Cargo.toml",
            "",
        ] {
            assert_eq!(route(&Method::Get, path).status, 404, "{path}");
        }
        assert_eq!(route(&Method::Post, "/").status, 405);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(
                !asset.contains("http://")
                    && !asset.contains("https://")
                    && !asset.contains("//cdn")
            );
        }
    }
}
