//! Request bodies: read whole before any guest runs (so an oversized or trickling
//! upload never costs an instance or a tenant's slot), within the body limit, the read
//! timeout and the host-wide budget of buffered body bytes.
//!
//! Bodies are read before a request takes one of its tenant's slots, so the tenant
//! limits do not bound how many are in memory at once; the budget does
//! (`[server] max_buffered_body_bytes`). Bytes are counted as they arrive, not as a
//! `content-length` promises them, so holding the budget costs a client the upload
//! itself rather than one header.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::content_encoding;
use super::responses::{self, HttpResponse};

/// The host-wide budget of request-body bytes held in memory.
pub struct BodyBudget {
    /// None: no budget (`max_buffered_body_bytes = 0`).
    bytes: Option<Arc<Semaphore>>,
    total: usize,
}

/// Budget a request holds for its body, given back when the request is done.
#[derive(Default)]
pub struct Reserved(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: (total > 0).then(|| Arc::new(Semaphore::new(total))),
            total,
        }
    }

    fn reserve(&self, reserved: &mut Reserved, bytes: usize) -> Result<(), BodyError> {
        let Some(budget) = &self.bytes else {
            return Ok(());
        };
        if bytes == 0 {
            return Ok(());
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| budget.clone().try_acquire_many_owned(n).ok())
            .ok_or(BodyError::Busy(self.total))?;
        match &mut reserved.0 {
            Some(held) => held.merge(permit),
            none => *none = Some(permit),
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("The request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0} ms")]
    TimedOut(u64),
    #[error("The server is holding too many request bodies at once (a budget of {0} bytes); retry shortly")]
    Busy(usize),
    #[error("could not read the request body: {0}")]
    Read(#[from] hyper::Error),
    #[error(transparent)]
    Encoding(#[from] content_encoding::DecodeError),
}

impl BodyError {
    pub fn into_response(self) -> HttpResponse {
        let (status, code) = match &self {
            BodyError::TooLarge(_) => (413, Some("request_too_large")),
            BodyError::TimedOut(_) => (408, Some("request_timeout")),
            BodyError::Busy(_) => (503, Some("server_busy")),
            BodyError::Read(_) => (400, None),
            BodyError::Encoding(e) => (e.http_status(), Some(e.code())),
        };
        let mut response = responses::error(status, self.to_string(), None, code);
        if status == 503 {
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Reads the whole body, decoding a `content-encoding` (see `content_encoding`), and
/// the budget it holds. `budget` None: not counted (the operator's own uploads).
pub async fn read(
    parts: &mut http::request::Parts,
    body: Incoming,
    limit: usize,
    timeout_ms: u64,
    budget: Option<&BodyBudget>,
) -> Result<(Bytes, Reserved), BodyError> {
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut reserved = Reserved::default();
    let collect = collect(body, limit, budget, &mut reserved);
    let raw = match timeout_ms {
        0 => collect.await?,
        ms => tokio::time::timeout(Duration::from_millis(ms), collect)
            .await
            .map_err(|_| BodyError::TimedOut(ms))??,
    };
    let encoded = parts.headers.contains_key(hyper::header::CONTENT_ENCODING) && !raw.is_empty();
    let decoded = content_encoding::decode(&mut parts.headers, raw, limit)?;
    if let (Some(budget), true) = (budget, encoded) {
        // Counted in full although the compressed bytes go first: simpler, and cautious.
        budget.reserve(&mut reserved, decoded.len())?;
    }
    Ok((decoded, reserved))
}

async fn collect<B>(
    mut body: B,
    limit: usize,
    budget: Option<&BodyBudget>,
    reserved: &mut Reserved,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    BodyError: From<B::Error>,
{
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > limit {
            return Err(BodyError::TooLarge(limit));
        }
        if let Some(budget) = budget {
            budget.reserve(reserved, data.len())?;
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut whole = BytesMut::with_capacity(total);
            for chunk in chunks {
                whole.extend_from_slice(&chunk);
            }
            whole.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    impl From<Infallible> for BodyError {
        fn from(never: Infallible) -> Self {
            match never {}
        }
    }

    fn chunked(
        parts: &[&'static str],
    ) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn chunks_are_joined_and_counted_against_the_budget_as_they_arrive() {
        let budget = BodyBudget::new(10);
        let mut reserved = Reserved::default();
        let body = collect(chunked(&["abc", "def"]), 100, Some(&budget), &mut reserved)
            .await
            .unwrap();
        assert_eq!(body, "abcdef");
        let mut other = Reserved::default();
        assert!(matches!(
            collect(chunked(&["12345"]), 100, Some(&budget), &mut other).await,
            Err(BodyError::Busy(10))
        ));
        drop(reserved);
        let body = collect(chunked(&["12345"]), 100, Some(&budget), &mut other)
            .await
            .unwrap();
        assert_eq!(body, "12345");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_too_large_whatever_its_chunks() {
        let mut reserved = Reserved::default();
        assert!(matches!(
            collect(chunked(&["abc", "def"]), 5, None, &mut reserved).await,
            Err(BodyError::TooLarge(5))
        ));
    }

    #[tokio::test]
    async fn without_a_budget_nothing_is_held() {
        let budget = BodyBudget::new(0);
        let mut reserved = Reserved::default();
        collect(chunked(&["abc"]), 100, Some(&budget), &mut reserved)
            .await
            .unwrap();
        assert!(reserved.0.is_none());
    }

    #[test]
    fn a_full_budget_is_a_503_to_retry() {
        let response = BodyError::Busy(1024).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
