//! nnhost's web console: serves a small single-page app (`assets/`, compiled in) that
//! talks to the host's HTTP API on the same origin. Deployed as its own public tenant
//! at path prefix "/" (the OpenAI router keeps "/v1"); see host/config/default.toml.
//!
//! The guest only serves files: the playground, the embeddings explorer and the status
//! panel run in the browser and call `/v1/...`, `/status` and `/health` themselves.

// The handler is exported on wasm32 only; `cargo test` also builds this natively.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::borrow::Cow;

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
    pub body: Cow<'static, str>,
}

/// OpenAI API paths that clients whose base URL lacks `/v1` ask the console for.
const API_PATHS: &[&str] = &[
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
    "/conversations",
    "/models",
    "/moderations",
    "/audio",
    "/images",
    "/files",
    "/batches",
];

/// An OpenAI-shaped error, for API clients that reached the console by mistake.
fn api_error(status: u16, message: &str, code: &str) -> Asset {
    Asset {
        status,
        content_type: "application/json",
        body: Cow::Owned(format!(
            "{{\"error\":{{\"message\":{},\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"{code}\"}}}}\n",
            json_string(message)
        )),
    }
}

/// `text` as a JSON string (it may hold a request's path).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Patch => "PATCH".into(),
        Method::Options => "OPTIONS".into(),
        Method::Connect => "CONNECT".into(),
        Method::Trace => "TRACE".into(),
        Method::Other(other) => other.clone(),
    }
}

/// Picks the response for a method and a path (the query string is ignored).
pub fn route(method: &Method, path_with_query: &str) -> Asset {
    let path = path_with_query.split(['?', '#']).next().unwrap_or("");
    // A client configured without `/v1` (the most common base-URL slip) is told so,
    // in the error shape its SDK reads.
    if API_PATHS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        let method = method_name(method);
        return api_error(
            404,
            &format!(
                "Invalid URL ({method} {path}): the OpenAI-compatible API is under /v1 \
                 ({method} /v1{path}); end the client's base URL with /v1."
            ),
            "unknown_url",
        );
    }
    if !matches!(method, Method::Get | Method::Head) {
        return api_error(
            405,
            &format!(
                "Method not allowed ({} {path}): the console only answers GET; the \
                 OpenAI-compatible API is under /v1.",
                method_name(method)
            ),
            "method_not_allowed",
        );
    }
    match path {
        "/" | "/index.html" => Asset {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: Cow::Borrowed(INDEX_HTML),
        },
        "/app.js" => Asset {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: Cow::Borrowed(APP_JS),
        },
        "/likelihood.js" => Asset {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: Cow::Borrowed(LIKELIHOOD_JS),
        },
        "/style.css" => Asset {
            status: 200,
            content_type: "text/css; charset=utf-8",
            body: Cow::Borrowed(STYLE_CSS),
        },
        _ => Asset {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: Cow::Borrowed(
                "Not found. The console is at /, the OpenAI-compatible API at /v1.\n",
            ),
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
            &asset.body
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
        let post = route(&Method::Post, "/");
        assert_eq!((post.status, post.content_type), (405, "application/json"));
        assert!(post.body.contains("\"code\":\"method_not_allowed\""));
    }

    #[test]
    fn api_paths_without_v1_get_an_openai_error_that_says_so() {
        for (method, path) in [
            (Method::Post, "/chat/completions"),
            (Method::Post, "/embeddings?x=1"),
            (Method::Get, "/models"),
            (Method::Get, "/models/smollm2-135m-instruct"),
            (Method::Post, "/responses"),
        ] {
            let a = route(&method, path);
            assert_eq!(
                (a.status, a.content_type),
                (404, "application/json"),
                "{path}"
            );
            assert!(a.body.contains("/v1/"), "{}", a.body);
            assert!(a.body.contains("\"code\":\"unknown_url\""), "{}", a.body);
        }
        // A path from the request is escaped in the JSON.
        let a = route(&Method::Post, "/x\"y\\z\u{1}");
        assert!(a.body.contains(r#"(POST /x\"y\\z\u0001)"#), "{}", a.body);
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
