//! Caps the bytes a guest may write as its response: past the cap the body ends with
//! an error and the connection is closed, so a guest cannot stream without end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub fn limit(body: HyperOutgoingBody, max: u64) -> HyperOutgoingBody {
    Limited {
        inner: body,
        remaining: max,
    }
    .boxed_unsync()
}

struct Limited {
    inner: HyperOutgoingBody,
    remaining: u64,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        tracing::warn!(
                            "guest response exceeded its size limit; closing the connection"
                        );
                        crate::metrics::metrics()
                            .guest_failures
                            .with_label_values(&["-", "response_too_large"])
                            .inc();
                        self.remaining = 0;
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(n)),
                        )));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
