//! Example nnhost guest: semantic search over a small corpus compiled into the
//! component, with the host's `embeddings.embed` (model [`MODEL`]).
//!
//! - `GET /search?q=...&k=3` and `POST /search` with `{"query": "...", "k": 3}` →
//!   `{"query", "model", "results": [{"text", "score"}, ...]}`, best first.
//! - `GET /` → what this service is.
//!
//! Each search makes ONE host call: the query and the whole corpus are embedded
//! together (the host batches them with other tenants' requests). The model's
//! vectors are unit length, so cosine similarity is a dot product.
//!
//! Everything but the `component` module is plain Rust over an embed function, so
//! `cargo test` runs it natively with a fake. Walkthrough: docs/WRITING_GUESTS.md.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "router",
});

use nnhost::inference::embeddings::EmbeddingBatch;
use nnhost::inference::types::{Error as HostError, ErrorCode};
use serde::Serialize;
use serde_json::{json, Value};

/// The embedding model this service uses (it must be allowed for the tenant).
pub const MODEL: &str = "all-MiniLM-L6-v2";
/// Results returned when the request does not say.
pub const DEFAULT_K: usize = 3;
/// The largest `POST /search` body the guest reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The documents searched.
pub const CORPUS: &[&str] = &[
    "Paris is the capital of France and is known for the Eiffel Tower.",
    "Tokyo is the most populous metropolitan area in the world.",
    "Venice is a city in northern Italy built on more than a hundred small islands.",
    "Reykjavik is the northernmost capital of a sovereign state.",
    "Cairo lies on the banks of the Nile, near the pyramids of Giza.",
    "Sydney is famous for its harbour and its opera house.",
    "The blue whale is the largest animal known to have ever existed.",
    "Cheetahs are the fastest land animals, reaching over 100 km/h in short bursts.",
    "Octopuses have three hearts and blue blood.",
    "Honeybees communicate the location of flowers with a waggle dance.",
    "Emperor penguins breed during the Antarctic winter.",
    "Cats sleep between twelve and sixteen hours a day.",
    "Rust guarantees memory safety without a garbage collector.",
    "WebAssembly runs sandboxed code at near-native speed in browsers and servers.",
    "A GPU runs thousands of threads in parallel, which suits neural network training.",
    "Transformers use self-attention to relate every token to every other token.",
    "HTTP/2 multiplexes many requests over a single TCP connection.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "Mount Everest is the highest mountain above sea level.",
    "Coffee is one of the most traded agricultural commodities in the world.",
];

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Extra headers besides `content-type: application/json` (e.g. `allow`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

/// An error answered as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        let kind = if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(400, message)
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// `{"error":{"message","type","param","code"}}` in that order (structs keep
    /// field order; `json!` would sort the keys).
    pub fn into_response(self) -> Response {
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
        let error = Inner {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: self.code,
        };
        let mut r = Response::json(self.status, &Body { error });
        if self.status == 405 {
            r.headers.push(("allow", "GET, POST".into()));
        }
        r
    }
}

/// The host's error record as an HTTP error; its message is safe to show clients.
impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let (status, code) = match e.code {
            ErrorCode::InvalidArgument => (400, None),
            ErrorCode::NotFound => (404, Some("model_not_found")),
            ErrorCode::ContextLengthExceeded => (400, Some("context_length_exceeded")),
            ErrorCode::Unsupported => (400, Some("unsupported")),
            ErrorCode::ResourceExhausted => (429, Some("resource_exhausted")),
            ErrorCode::Busy => (503, Some("server_busy")),
            ErrorCode::BackendError | ErrorCode::Internal => (500, None),
        };
        let mut out = ApiError::new(status, e.message);
        out.param = e.param;
        out.code = code;
        out
    }
}

/// Embeds texts with [`MODEL`]: the host import in the component, a fake in tests.
pub type EmbedFn<'a> = &'a dyn Fn(Vec<String>) -> Result<EmbeddingBatch, HostError>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub text: &'static str,
    pub score: f32,
}

/// Routes one request. `target` is the path with its query; `read_body` is called
/// only by `POST /search`.
pub fn dispatch(
    method: &str,
    target: &str,
    embed: EmbedFn,
    read_body: &mut dyn FnMut() -> Result<Vec<u8>, ApiError>,
) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let result = match (path, method) {
        ("/", "GET") => Ok(describe()),
        ("/search", "GET") => parse_query(query).and_then(|(q, k)| search(embed, q, k)),
        ("/search", "POST") => read_body()
            .and_then(|body| parse_body(&body))
            .and_then(|(q, k)| search(embed, q, k)),
        ("/" | "/search", _) => Err(ApiError::new(
            405,
            format!("Method not allowed: {method} {path}. Use GET (or POST /search)."),
        )
        .code("method_not_allowed")),
        _ => Err(ApiError::new(
            404,
            format!("Unknown request URL: {method} {path}. Try GET / or GET /search?q=..."),
        )
        .code("unknown_url")),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn describe() -> Response {
    Response::json(
        200,
        &json!({
            "name": "semantic-search",
            "description": "Semantic search over a small built-in corpus, an example nnhost guest.",
            "model": MODEL,
            "documents": CORPUS.len(),
            "endpoints": {
                "GET /search?q=...&k=3": "the k documents closest in meaning to q",
                "POST /search": "the same with a JSON body {\"query\": \"...\", \"k\": 3}",
            },
        }),
    )
}

/// `q` (required) and `k` from a URL query string.
pub fn parse_query(query: &str) -> Result<(String, usize), ApiError> {
    let mut q = None;
    let mut k = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(name).as_str() {
            "q" => q = Some(percent_decode(value)),
            "k" => k = Some(percent_decode(value)),
            _ => {}
        }
    }
    let q = q.ok_or_else(|| ApiError::invalid("q", "Missing query parameter 'q'."))?;
    let k = match k {
        None => DEFAULT_K,
        Some(k) => k.trim().parse().ok().filter(|&k| k >= 1).ok_or_else(|| {
            ApiError::invalid("k", format!("'k' must be a positive integer, not {k:?}."))
        })?,
    };
    Ok((q, k))
}

/// `{"query": string, "k"?: positive integer}`.
pub fn parse_body(body: &[u8]) -> Result<(String, usize), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("The request body is not valid JSON: {e}.")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::new(400, "The request body must be a JSON object."))?;
    let q = match obj.get("query") {
        Some(Value::String(q)) => q.clone(),
        Some(_) => return Err(ApiError::invalid("query", "'query' must be a string.")),
        None => {
            return Err(ApiError::invalid(
                "query",
                "Missing required parameter 'query'.",
            ))
        }
    };
    let k = match obj.get("k") {
        None | Some(Value::Null) => DEFAULT_K,
        Some(k) => k
            .as_u64()
            .filter(|&k| k >= 1)
            .map(|k| usize::try_from(k).unwrap_or(usize::MAX))
            .ok_or_else(|| ApiError::invalid("k", "'k' must be a positive integer."))?,
    };
    Ok((q, k))
}

/// Embeds the query together with the corpus (one host call) and ranks the corpus.
pub fn search(embed: EmbedFn, query: String, k: usize) -> Result<Response, ApiError> {
    if query.trim().is_empty() {
        return Err(ApiError::invalid("q", "The query must not be empty."));
    }
    let mut texts = Vec::with_capacity(1 + CORPUS.len());
    texts.push(query.clone());
    texts.extend(CORPUS.iter().map(|s| s.to_string()));
    let batch = embed(texts)?;
    #[derive(Serialize)]
    struct Results<'a> {
        query: &'a str,
        model: &'a str,
        results: Vec<Hit>,
    }
    let results = rank(&batch, k)?;
    Ok(Response::json(
        200,
        &Results {
            query: &query,
            model: MODEL,
            results,
        },
    ))
}

/// `batch` holds the query's vector, then one per corpus document.
pub fn rank(batch: &EmbeddingBatch, k: usize) -> Result<Vec<Hit>, ApiError> {
    let dims = batch.dimensions as usize;
    if dims == 0 || batch.data.len() != dims * (1 + CORPUS.len()) {
        return Err(ApiError::new(
            500,
            format!(
                "The host returned {} floats of dimension {dims} for {} texts.",
                batch.data.len(),
                1 + CORPUS.len()
            ),
        ));
    }
    let mut vectors = batch.data.chunks_exact(dims);
    let query = vectors.next().unwrap_or_default();
    let mut hits: Vec<Hit> = CORPUS
        .iter()
        .zip(vectors)
        .map(|(text, v)| Hit {
            text,
            score: query.iter().zip(v).map(|(a, b)| a * b).sum(),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(k);
    Ok(hits)
}

/// `%XX` escapes and `+` for space (form encoding); invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The wasi:http glue: read the request, call [`dispatch`] with the host's embed, send.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use nnhost::inference::embeddings::{self, EmbedInput, EmbedOptions};
    use wasip2::http::types::{
        Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
        ResponseOutparam,
    };
    use wasip2::io::streams::StreamError;

    struct Component;

    impl wasip2::exports::http::incoming_handler::Guest for Component {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let method = match request.method() {
                Method::Get => "GET",
                Method::Head => "HEAD",
                Method::Post => "POST",
                Method::Put => "PUT",
                Method::Delete => "DELETE",
                Method::Connect => "CONNECT",
                Method::Options => "OPTIONS",
                Method::Trace => "TRACE",
                Method::Patch => "PATCH",
                Method::Other(_) => "OTHER",
            };
            let target = request.path_with_query().unwrap_or_else(|| "/".into());
            let embed = |texts: Vec<String>| {
                embeddings::embed(
                    MODEL,
                    &EmbedInput::Texts(texts),
                    EmbedOptions { truncate: true },
                )
            };
            let mut read_body = || read_body(&request);
            send(out, dispatch(method, &target, &embed, &mut read_body));
        }
    }

    /// The whole request body, at most [`MAX_BODY_BYTES`] (413 beyond).
    fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, ApiError> {
        let unreadable = || ApiError::new(400, "The request body could not be read.");
        let too_large = || {
            ApiError::new(
                413,
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            )
            .code("request_too_large")
        };
        let body = request.consume().map_err(|()| unreadable())?;
        let stream = body.stream().map_err(|()| unreadable())?;
        let mut buf = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) if buf.len() + chunk.len() > MAX_BODY_BYTES => return Err(too_large()),
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
            }
        }
        drop(stream);
        drop(IncomingBody::finish(body));
        Ok(buf)
    }

    fn send(out: ResponseOutparam, response: Response) {
        let mut headers = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            (
                "content-length".to_string(),
                response.body.len().to_string().into_bytes(),
            ),
        ];
        headers.extend(
            response
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone().into_bytes())),
        );
        let Ok(fields) = Fields::from_list(&headers) else {
            return;
        };
        let head = OutgoingResponse::new(fields);
        let _ = head.set_status_code(response.status);
        let Ok(outgoing) = head.body() else { return };
        ResponseOutparam::set(out, Ok(head));
        let Ok(stream) = outgoing.write() else { return };
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for piece in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(piece).is_err() {
                return; // the client went away
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }

    wasip2::http::proxy::export!(Component);
}

#[cfg(test)]
mod tests;
