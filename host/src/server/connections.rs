//! Connections: how many the host keeps open at once, when an open one is closed, and
//! how the accept loop survives running out of file descriptors.
//!
//! Each connection holds a slot; with all of `[server] max_connections` taken the accept
//! loop waits for one to close, so further clients queue in the kernel's listen backlog
//! instead of the process running out of descriptors (which would also fail model
//! loads and component deploys). The slots double as the shutdown tracker: when all of
//! them are back, every connection has finished.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::responses::HttpResponse;
use crate::metrics::metrics;

/// Descriptors kept back for the host's own files (models, components, ORT, logs)
/// when the connection limit is derived from the open-file limit.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The derived limit's ceiling: beyond it memory, not descriptors, runs out first.
const MOST_DERIVED_CONNECTIONS: u64 = 65_536;

/// The slots connections hold while open.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    max: u32,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// The slots for `[server] max_connections` (0: derived from the open-file limit,
    /// which this raises first), saying in the log what the limit came to.
    pub fn for_limit(configured: usize) -> Self {
        let open_files = raise_open_file_limit();
        let slots = Self::new(max_connections(configured, open_files));
        let max = slots.max as u64;
        tracing::info!(
            max_connections = max,
            open_file_limit = open_files,
            "connection limit"
        );
        if open_files.is_some_and(|n| max > n.saturating_sub(RESERVED_DESCRIPTORS)) {
            tracing::warn!(
                max_connections = max,
                open_file_limit = open_files,
                "max_connections is above what the open-file limit leaves after the host's own files; accepts may fail"
            );
        }
        slots
    }

    /// Waits for a free slot; the connection gives it back when its task ends.
    pub async fn take(&self) -> Slot {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the slots' semaphore is never closed");
        Slot(permit)
    }

    /// Resolves once every connection has ended.
    pub async fn all_free(&self) {
        let _all = self
            .semaphore
            .acquire_many(self.max)
            .await
            .expect("the slots' semaphore is never closed");
    }
}

/// The connection limit: as configured, or (0) the open-file limit less what the host
/// needs for itself.
fn max_connections(configured: usize, open_files: Option<u64>) -> usize {
    if configured > 0 {
        return configured;
    }
    let derived = open_files
        .map(|n| n.saturating_sub(RESERVED_DESCRIPTORS))
        .unwrap_or(4096)
        .clamp(64, MOST_DERIVED_CONNECTIONS);
    derived as usize
}

/// Raises the soft open-file limit to the hard one, as Go's runtime and most servers
/// do: shells and service managers often start processes at 1024, which a busy server
/// passes with connections alone. Returns the limit now in force.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(limit.rlim_cur as u64)
}

/// An accept that failed because the process or machine is out of descriptors or
/// memory fails again if retried at once: the loop pauses instead of spinning.
pub fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What a connection is doing: requests whose response is not yet fully sent, and
/// when the last one began or ended.
pub struct Activity {
    busy: AtomicUsize,
    last_change: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        *self.last_change.lock().unwrap() = Instant::now();
        Busy(self.clone())
    }

    /// Since when nothing has been in flight; None while something is.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.last_change.lock().unwrap();
        (self.busy.load(Ordering::SeqCst) == 0).then_some(since)
    }
}

/// A request in flight on a connection, until its response body is sent or dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_change.lock().unwrap() = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a request as in flight on its connection from its head to its response's
/// last byte (a streamed response keeps its connection busy).
pub async fn tracked<F>(activity: Arc<Activity>, respond: F) -> Result<HttpResponse, Infallible>
where
    F: Future<Output = Result<HttpResponse, Infallible>>,
{
    let busy = activity.begin();
    let response = respond.await?;
    Ok(response.map(|body| {
        TrackedBody {
            inner: body,
            _busy: busy,
        }
        .boxed_unsync()
    }))
}

struct TrackedBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection until it ends. It is closed gracefully (requests in flight
/// finish; HTTP/2 sends GOAWAY) when the server shuts down or when nothing has been in
/// flight for `idle_timeout` — hyper closes idle HTTP/1 connections itself, but leaves
/// idle HTTP/2 connections open for as long as the peer answers pings.
pub async fn serve<C, E>(
    connection: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    idle_timeout: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
    _slot: Slot,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let _open = Open::count();
    let mut connection = pin!(connection);
    let mut closing = *shutdown.borrow();
    if closing {
        graceful_shutdown(connection.as_mut());
    }
    loop {
        let idle_check = match idle_timeout {
            Some(timeout) if !closing => {
                Some(activity.idle_since().unwrap_or_else(Instant::now) + timeout)
            }
            _ => None,
        };
        tokio::select! {
            ended = connection.as_mut() => return ended,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                graceful_shutdown(connection.as_mut());
            }
            _ = tokio::time::sleep_until(idle_check.unwrap_or_else(Instant::now)), if idle_check.is_some() => {
                let timeout = idle_timeout.unwrap_or_default();
                if activity.idle_since().is_some_and(|since| since.elapsed() >= timeout) {
                    closing = true;
                    graceful_shutdown(connection.as_mut());
                }
            }
        }
    }
}

/// A connection's slot, given back when dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A connection counted in `nnhost_http_connections` while it is served.
struct Open;

impl Open {
    fn count() -> Self {
        metrics()
            .http_connections
            .with_label_values::<&str>(&[])
            .inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics()
            .http_connections
            .with_label_values::<&str>(&[])
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_taken_as_configured_or_derived_from_open_files() {
        assert_eq!(max_connections(10, Some(1024)), 10);
        assert_eq!(max_connections(0, Some(1024)), 768);
        assert_eq!(max_connections(0, Some(100)), 64);
        assert_eq!(max_connections(0, Some(u64::MAX)), 65_536);
        assert_eq!(max_connections(0, None), 4096);
    }

    #[test]
    fn running_out_of_descriptors_is_told_from_a_client_gone_before_accept() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(is_resource_exhaustion(&emfile));
        assert!(!is_resource_exhaustion(&aborted));
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_when_every_response_has_been_sent() {
        let activity = Activity::new();
        assert!(activity.idle_since().is_some());
        let first = activity.begin();
        let second = activity.begin();
        assert!(activity.idle_since().is_none());
        drop(first);
        assert!(activity.idle_since().is_none());
        drop(second);
        assert!(activity.idle_since().is_some());
    }

    #[tokio::test]
    async fn a_streamed_response_keeps_its_connection_busy_until_its_body_is_done() {
        let activity = Activity::new();
        let response = tracked(activity.clone(), async {
            Ok(super::super::responses::text(
                200,
                "text/plain",
                "hi".into(),
            ))
        })
        .await
        .unwrap();
        assert!(activity.idle_since().is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hi");
        assert!(activity.idle_since().is_some());
    }

    #[tokio::test]
    async fn waiting_for_all_slots_ends_when_the_last_connection_closes() {
        let slots = Arc::new(Slots::new(2));
        let one = slots.take().await;
        let two = slots.take().await;
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.all_free().await }
        });
        drop(one);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(two);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
