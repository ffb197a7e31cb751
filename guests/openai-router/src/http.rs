//! HTTP plumbing: the [`Response`] routes return, and the wasi:http glue that
//! reads a request body (with a size cap) and writes a response.

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

/// Sends `response` (adds `content-length`). Failures past `ResponseOutparam::set`
/// can only be dropped: the client sees a truncated response.
pub fn send(out: ResponseOutparam, response: Response) {
    let mut entries: Vec<(String, Vec<u8>)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), header_value(v)))
        .collect();
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
