//! HTTP plumbing: the [`Reply`] routes return (a buffered [`Response`] or a
//! [`StreamingResponse`] whose body is written as it is made), and the wasi:http
//! glue that reads a request body (with a size cap) and writes a response.

use crate::errors::ApiError;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// A complete response: status, headers and body bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self::new(status, "application/json", body)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a route returns.
pub enum Reply {
    /// A complete response, sent with `content-length`.
    Full(Response),
    /// A head sent at once, then a body written piece by piece (SSE).
    Stream(StreamingResponse),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Full(r)
    }
}

impl Reply {
    /// Runs a streaming body to the end and returns the whole response (tests,
    /// and anything that needs the bytes in memory).
    pub fn buffer(self) -> Response {
        match self {
            Reply::Full(r) => r,
            Reply::Stream(s) => {
                let mut body = Vec::new();
                s.body.write_to(&mut body);
                Response {
                    status: s.status,
                    headers: s.headers,
                    body,
                }
            }
        }
    }
}

/// A response whose head goes out before its body exists.
pub struct StreamingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn StreamBody>,
}

/// The client went away (or the connection failed): stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

/// Where a streaming body is written; each `write` is sent (flushed) before it returns.
pub trait BodySink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Disconnected>;
}

impl BodySink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// A body produced while it is sent. Returning ends the body; on
/// [`Disconnected`] the producer should return at once (dropping what it drives).
pub trait StreamBody {
    fn write_to(self: Box<Self>, sink: &mut dyn BodySink);
}

pub fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

/// Reads the whole request body; more than `cap` bytes is a 413.
pub fn read_body(request: &IncomingRequest, cap: usize) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get("content-length")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(ApiError::body_too_large(cap));
    }
    let unreadable = || ApiError::bad_request("The request body could not be read.");
    let body = request.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(cap as u64) as usize);
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if buf.len() + chunk.len() > cap {
                    return Err(ApiError::body_too_large(cap));
                }
                buf.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(buf)
}

/// Header values must be visible ASCII (or space/tab); anything else becomes `?`.
fn header_value(v: &str) -> Vec<u8> {
    v.bytes()
        .map(|b| {
            if b == b'\t' || (0x20..0x7f).contains(&b) {
                b
            } else {
                b'?'
            }
        })
        .collect()
}

fn header_fields(headers: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), header_value(v)))
        .collect()
}

/// Sends `reply`: a buffered response with [`send`], a streaming one with
/// [`send_streaming`].
pub fn send_reply(out: ResponseOutparam, reply: Reply) {
    match reply {
        Reply::Full(r) => send(out, r),
        Reply::Stream(s) => send_streaming(out, s),
    }
}

/// Sends the head of `response` at once (no `content-length`: the body is
/// chunked), then lets its body write to the wasi output stream; every write is
/// flushed before the producer continues, so clients see each event as it is made.
pub fn send_streaming(out: ResponseOutparam, response: StreamingResponse) {
    let Ok(headers) = Fields::from_list(&header_fields(&response.headers)) else {
        send(
            out,
            ApiError::server("The response had an invalid header.").into_response(),
        );
        return;
    };
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(response.status);
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    let Ok(stream) = outgoing.write() else { return };
    let mut sink = WasiSink { stream: &stream };
    response.body.write_to(&mut sink);
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
struct WasiSink<'a> {
    stream: &'a wasip2::io::streams::OutputStream,
}

impl BodySink for WasiSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
        for piece in bytes.chunks(4096) {
            self.stream
                .blocking_write_and_flush(piece)
                .map_err(|_| Disconnected)?;
        }
        Ok(())
    }
}

/// Sends `response` (adds `content-length`). Failures past `ResponseOutparam::set`
/// can only be dropped: the client sees a truncated response.
pub fn send(out: ResponseOutparam, response: Response) {
    let mut entries = header_fields(&response.headers);
    entries.push((
        "content-length".into(),
        response.body.len().to_string().into_bytes(),
    ));
    let headers = match Fields::from_list(&entries) {
        Ok(h) => h,
        Err(_) => {
            let body = ApiError::server("The response had an invalid header.").to_json();
            let fallback = Fields::from_list(&[
                ("content-type".into(), b"application/json".to_vec()),
                ("content-length".into(), body.len().to_string().into_bytes()),
            ]);
            if let Ok(headers) = fallback {
                send_with(out, headers, 500, &body);
            }
            return;
        }
    };
    send_with(out, headers, response.status, &response.body);
}

fn send_with(out: ResponseOutparam, headers: Fields, status: u16, body: &[u8]) {
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    let Ok(stream) = outgoing.write() else { return };
    let mut rest = body;
    while !rest.is_empty() {
        match stream.check_write() {
            Ok(0) => stream.subscribe().block(),
            Ok(permit) => {
                let n = rest
                    .len()
                    .min(usize::try_from(permit).unwrap_or(usize::MAX));
                if stream.write(&rest[..n]).is_err() {
                    return;
                }
                rest = &rest[n..];
            }
            Err(_) => return,
        }
    }
    let _ = stream.blocking_flush();
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
