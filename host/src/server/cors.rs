//! Cross-origin requests from browsers (`[server] cors_allow_origins`): a web page on
//! another origin may call the API with its own key. The host answers the browser's
//! preflight itself (no tenant, no guest: preflights carry no key) and marks the
//! answers to allowed origins. Never for the admin API, an operator's tool.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

use super::responses::{self, HttpResponse};

/// Guests may serve any method, so a preflight may ask for any of these.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Browsers cache a preflight at most this long anyway (Chromium: 2 hours).
const MAX_AGE_SECONDS: &str = "7200";

#[derive(Debug, Clone, PartialEq)]
enum Allowed {
    Any,
    Exact(String),
    /// `scheme://host:*`: that host on any port (or none).
    AnyPort(String),
}

/// The configured origins; empty means cross-origin requests get no CORS headers.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<Allowed>,
}

/// How an allowed request's answer names its origin.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    Any,
    Origin(HeaderValue),
}

impl Cors {
    /// Each entry is `*`, an origin (`https://app.example.com`, `http://localhost:3000`)
    /// or an origin with any port (`http://localhost:*`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let origins = entries
            .iter()
            .map(|entry| parse_entry(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self { origins })
    }

    /// The grant for a request that names an allowed `Origin`, outside the admin API.
    pub fn grant(&self, headers: &HeaderMap, path: &str) -> Option<Grant> {
        if self.origins.is_empty() || path == "/admin" || path.starts_with("/admin/") {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.iter().find_map(|allowed| match allowed {
            Allowed::Any => Some(Grant::Any),
            Allowed::Exact(o) if *o == text => Some(Grant::Origin(origin.clone())),
            Allowed::AnyPort(base) => {
                let rest = text.strip_prefix(base.as_str())?;
                let port = rest.strip_prefix(':').unwrap_or(rest);
                port.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| Grant::Origin(origin.clone()))
            }
            Allowed::Exact(_) => None,
        })
    }

    /// A browser's preflight, which the host answers when CORS is configured.
    pub fn is_preflight(&self, method: &Method, headers: &HeaderMap, path: &str) -> bool {
        !self.origins.is_empty()
            && method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
            && !(path == "/admin" || path.starts_with("/admin/"))
    }

    /// 204 with what the browser asked for, or 403 for an origin not configured.
    pub fn preflight(&self, grant: Option<&Grant>, headers: &HeaderMap) -> HttpResponse {
        let Some(grant) = grant else {
            let origin = headers
                .get(ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("?");
            return responses::error(
                403,
                format!(
                    "Cross-origin requests from {origin} are not allowed (server.cors_allow_origins)."
                ),
                None,
                Some("origin_not_allowed"),
            );
        };
        let mut response = hyper::Response::builder()
            .status(204)
            .body(responses::full(bytes::Bytes::new()))
            .unwrap();
        let h = response.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        grant.apply(&mut response);
        response
    }
}

impl Grant {
    /// Lets the page read the answer, its headers included (request ids, the provider,
    /// `retry-after`).
    pub fn apply(&self, response: &mut HttpResponse) {
        let h = response.headers_mut();
        match self {
            Grant::Any => {
                h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            Grant::Origin(origin) => {
                h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                h.append(VARY, HeaderValue::from_static("origin"));
            }
        }
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
    }
}

fn parse_entry(entry: &str) -> Result<Allowed, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry == "*" {
        return Ok(Allowed::Any);
    }
    let bad = || {
        format!(
            "server.cors_allow_origins: {entry:?} is not \"*\", an origin such as \
             \"https://app.example.com\" or \"http://localhost:3000\", or \"http://localhost:*\""
        )
    };
    let (scheme, rest) = entry.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') || rest.ends_with(':') {
        return Err(bad());
    }
    if let Some(host) = rest.strip_suffix(":*") {
        if host.is_empty() || host.contains(':') && !host.ends_with(']') {
            return Err(bad());
        }
        return Ok(Allowed::AnyPort(format!("{scheme}://{host}")));
    }
    Ok(Allowed::Exact(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(entries: &[&str]) -> Cors {
        Cors::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn origin(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn entries_are_checked() {
        for bad in [
            "localhost",
            "http://",
            "http://a/b",
            "http://a:",
            "://a",
            "http://:*",
        ] {
            assert!(Cors::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(Cors::parse(&["http://[::1]:*".into(), "HTTPS://A.example".into()]).is_ok());
    }

    #[test]
    fn origins_match_exactly_or_on_any_port() {
        let c = cors(&["http://localhost:*", "https://app.example.com"]);
        let granted = |o: &str| c.grant(&origin(o), "/v1/models");
        assert_eq!(
            granted("http://localhost:5173"),
            Some(Grant::Origin(HeaderValue::from_static(
                "http://localhost:5173"
            )))
        );
        assert!(granted("http://localhost").is_some());
        assert!(granted("https://APP.example.com").is_some());
        for refused in [
            "http://localhost.evil.com",
            "http://localhost:80x",
            "https://localhost:3000",
            "https://app.example.com.evil",
            "http://app.example.com",
        ] {
            assert_eq!(granted(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_admin_api_and_an_empty_list_grant_nothing() {
        assert_eq!(cors(&[]).grant(&origin("http://a.b"), "/v1/models"), None);
        let any = cors(&["*"]);
        assert_eq!(
            any.grant(&origin("http://a.b"), "/v1/models"),
            Some(Grant::Any)
        );
        assert_eq!(any.grant(&origin("http://a.b"), "/admin/tenants"), None);
        assert_eq!(any.grant(&HeaderMap::new(), "/v1/models"), None);
    }

    #[test]
    fn a_preflight_gets_what_it_asked_for() {
        let c = cors(&["http://localhost:*"]);
        let mut h = origin("http://localhost:3000");
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization,content-type"),
        );
        assert!(c.is_preflight(&Method::OPTIONS, &h, "/v1/chat/completions"));
        assert!(!c.is_preflight(&Method::OPTIONS, &h, "/admin/tenants"));
        assert!(!cors(&[]).is_preflight(&Method::OPTIONS, &h, "/v1/chat/completions"));
        let r = c.preflight(c.grant(&h, "/v1/chat/completions").as_ref(), &h);
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization,content-type"
        );
        assert_eq!(r.headers()[VARY], "origin");
        let elsewhere = origin("https://evil.example");
        assert_eq!(c.preflight(None, &elsewhere).status(), 403);
    }
}
