//! Caps the bytes a guest may write as its response: past the cap the body ends with
//! an error and the connection is closed, so a guest cannot stream without end. A body
//! dropped before its end (the client went away) stops the guest still writing it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::runtime::AbortOnDrop;

pub fn limit(body: HyperOutgoingBody, max: u64, guest: AbortOnDrop) -> HyperOutgoingBody {
    Limited {
        inner: body,
        remaining: max,
        guest,
    }
    .boxed_unsync()
}

struct Limited {
    inner: HyperOutgoingBody,
    remaining: u64,
    /// Armed until the body ends: a streaming guest waiting on a generation learns
    /// of a departed client only when it writes its next token, and that may be a
    /// long prefill away.
    guest: AbortOnDrop,
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
            Poll::Ready(None) => {
                self.guest.disarm();
                Poll::Ready(None)
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

impl Drop for Limited {
    fn drop(&mut self) {
        // hyper need not poll a body past the end it announced.
        if self.inner.is_end_stream() {
            self.guest.disarm();
        }
    }
}
