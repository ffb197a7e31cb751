//! One HTTP request through a guest: a fresh store with the tenant's limits, a
//! CPU budget for time spent in wasm, and a longer wall-clock limit for the whole
//! request (host calls such as a batched embedding may rightly wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use thiserror::Error;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as HttpErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::engine::EPOCH_TICK;
use super::runtime::AbortOnDrop;
use super::state::GuestState;
use crate::cpu_priority;

/// CPU a request may use (~20 ms) before it becomes background: it then runs only while
/// no graph runs (see `cpu_priority`). Counted as a burst that waiting for inference
/// pays back (`GuestState::burst_ticks`). The router guest needs well under 1 ms for an
/// embedding request, but a chat request's start (its template compiled in a fresh
/// instance) took 1–4 ms warm and up to 13 ms on a new instance slot; at 5 ms such a
/// request was demoted and then stalled behind its own generation's graph runs.
const BACKGROUND_AFTER_TICKS: u64 = 20;
/// The longest a background guest steps aside at a time, so that it still reaches its
/// own limits on a host that is never idle. Long: each forced slice lands on the
/// foreground work it should have waited for (at 100 ms, a neighbour's p99 during a
/// runaway loop was 5.1–6.0 ms against 3.8–4.3 ms at 1 s).
const MAX_STEP_ASIDE: Duration = Duration::from_millis(1000);
/// Ticks a background guest then computes before it steps aside again: enough for a
/// short request held back only by its tenant's probation to finish in one slice.
const FORCED_SLICE_TICKS: u64 = 5;
/// CPU a request may use at full speed (~50 ms) before it is throttled.
const THROTTLE_AFTER_TICKS: u64 = 50;
/// A throttled guest sleeps this many ticks for every tick it computes (a quarter of
/// a core): ORT's intra-op threads span every core, so any CPU a runaway guest takes
/// slows every other tenant's inference.
const THROTTLE_SLEEP_TICKS: u32 = 3;

#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub cpu_time: Duration,
    pub max_host_bytes: usize,
    pub max_response_bytes: u64,
    pub max_resources: usize,
    pub allow_outgoing_http: bool,
}

impl RequestLimits {
    fn cpu_ticks(&self) -> u64 {
        (self.cpu_time.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
    }
}

/// Why a guest produced no response. Each ends only this request.
#[derive(Debug, Error)]
pub enum GuestFailure {
    #[error("the request exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("the guest exceeded its CPU budget of {0:?}")]
    CpuBudget(Duration),
    #[error("the guest overflowed its stack")]
    StackOverflow,
    #[error("the guest failed: {0}")]
    Trap(String),
    #[error("the guest returned without sending a response")]
    NoResponse,
    #[error("the guest answered with an HTTP error: {0:?}")]
    Http(HttpErrorCode),
    #[error("cannot start the guest: {0}")]
    Instantiate(String),
}

impl GuestFailure {
    /// Whether the guest misbehaved (rather than answering with an HTTP error of its own).
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(self, GuestFailure::Http(_))
    }

    pub fn http_status(&self) -> u16 {
        match self {
            GuestFailure::Timeout(_) | GuestFailure::CpuBudget(_) => 504,
            GuestFailure::Instantiate(_) => 503,
            _ => 500,
        }
    }
}

/// `guard` (e.g. the tenant's concurrency permit) lives until the guest has finished,
/// streaming included.
pub async fn handle(
    pre: &ProxyPre<GuestState>,
    state: GuestState,
    limits: &RequestLimits,
    request: hyper::Request<Full<Bytes>>,
    guard: impl Send + 'static,
) -> Result<hyper::Response<HyperOutgoingBody>, GuestFailure> {
    let pre = pre.clone();
    let tenant = state.api.access.tenant.clone();
    let mut state = state;
    // Generations end a little before the time limit, leaving the guest time to answer.
    let margin = (limits.timeout / 10).min(Duration::from_secs(2));
    state.api.generation_deadline = Some(tokio::time::Instant::now() + limits.timeout - margin);
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limits);
    let budget = limits.cpu_ticks();
    let max_response_bytes = limits.max_response_bytes;
    let memory = limits.memory_bytes;
    let timeout = limits.timeout;
    let background_total = crate::metrics::metrics().guests_background.clone();
    let turned_background = background_total.with_label_values(&[&tenant, "cpu"]);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        let now = std::time::Instant::now();
        let since = now.saturating_duration_since(state.last_tick);
        let stepped_aside = Duration::from_nanos(state.stepped_aside.swap(0, Ordering::Relaxed));
        let waited = std::mem::take(&mut state.api.waited);
        // The thread's CPU clock (see `cpu_time`); without one, the wall time since the
        // last tick less what the guest spent waiting for inference or stepping aside.
        let cpu = state
            .cpu_mark
            .take()
            .unwrap_or_else(|| since.saturating_sub(waited).saturating_sub(stepped_aside));
        let computing = cpu >= EPOCH_TICK / 2;
        // Waiting for inference pays the burst back, tick for tick: a guest streaming a
        // long generation computes a little per token, which over minutes added up to
        // a loop's burst and sent streams to the background, where they stalled for up
        // to a second behind other requests' prefills.
        let waited_ticks = (waited.as_nanos() / EPOCH_TICK.as_nanos()) as u64;
        state.burst_ticks = state.burst_ticks.saturating_sub(waited_ticks);
        state.last_tick = now;
        if stepped_aside >= MAX_STEP_ASIDE {
            state.forced_slice_ticks = FORCED_SLICE_TICKS;
        }
        if computing {
            state.cpu_ticks += 1;
            state.burst_ticks += 1;
        }
        if state.cpu_ticks > budget || state.started.elapsed() > timeout {
            return Ok(UpdateDeadline::Interrupt);
        }
        if computing && state.burst_ticks > BACKGROUND_AFTER_TICKS && state.background.is_none() {
            tracing::debug!(cpu_ticks = state.cpu_ticks, "guest turned background");
            turned_background.inc();
            state.foreground = None;
            state.background = Some(cpu_priority::background_guest());
            state.demoted.store(true, Ordering::Relaxed);
        }
        // A guest that keeps computing gets at most a quarter of a core, so a runaway
        // loop cannot crowd out other tenants' guests either.
        let throttle = computing && state.cpu_ticks > THROTTLE_AFTER_TICKS;
        if state.forced_slice_ticks > 0 {
            state.forced_slice_ticks -= 1;
        } else if state.background.is_some() && (throttle || cpu_priority::busy()) {
            let pause = if throttle {
                EPOCH_TICK * THROTTLE_SLEEP_TICKS
            } else {
                Duration::ZERO
            };
            let stepped_aside = state.stepped_aside.clone();
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move { step_aside(pause, &stepped_aside).await }),
            ));
        }
        // Yield every tick so a guest that computes for long never holds an async worker.
        Ok(UpdateDeadline::Yield(1))
    });

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = request.map(|body| {
        http_body_util::BodyExt::map_err(
            body,
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        )
    });
    let prepared = (|| {
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        Ok::<_, wasmtime::Error>((req, out))
    })();
    let (req, out) = prepared.map_err(|e| GuestFailure::Instantiate(format!("{e:#}")))?;

    // The guest runs in its own task: it may keep streaming the body after the
    // response head has gone out.
    let demoted = store.data().demoted.clone();
    let starts_background = store.data().background.is_some();
    if starts_background {
        background_total
            .with_label_values(&[&tenant, "probation"])
            .inc();
    }
    let stepped_aside = store.data().stepped_aside.clone();
    let cpu_mark = store.data().cpu_mark.clone();
    let guest = async move {
        let _guard = guard;
        let _running = super::ticker::Running::start();
        let run = async {
            if starts_background {
                // Not even instantiation runs before the host is idle.
                step_aside(Duration::ZERO, &stepped_aside).await;
            }
            let started = std::time::Instant::now();
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (true, e))?;
            crate::metrics::metrics()
                .guest_instantiate
                .with_label_values(&[&tenant])
                .observe(started.elapsed().as_secs_f64());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map_err(|e| (false, e))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => Ok(()),
            // Its limits stop a guest's start too (a tenant on probation starts in
            // the background and on a host never idle may reach its deadline there).
            Ok(Err((true, e))) if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) => {
                Err(classify(e, &store, timeout, memory))
            }
            Ok(Err((true, e))) => Err(GuestFailure::Instantiate(format!("{e:#}"))),
            Ok(Err((false, e))) => Err(classify(e, &store, timeout, memory)),
            Err(_) => Err(GuestFailure::Timeout(timeout)),
        }
    };
    let task = tokio::spawn(super::runtime::run_demotable(
        super::cpu_time::Marked::new(guest, cpu_mark).in_current_span(),
        demoted,
    ));

    // The guest works only for a client that is still there: hyper drops this future
    // (before the response head) or the response body (after it) when the connection
    // closes, and either stops the guest, whose store holds its pending inference:
    // queued inputs and generations are then dropped before they cost more.
    let abandoned = AbortOnDrop::new(task.abort_handle());
    match receiver.await {
        Ok(Ok(response)) => {
            let mut abandoned = Some(abandoned);
            Ok(response.map(|body| {
                let guest = abandoned.take().expect("one body");
                super::limited_body::limit(body, max_response_bytes, guest)
            }))
        }
        Ok(Err(code)) => Err(GuestFailure::Http(code)),
        Err(_) => match task.await {
            Ok(Ok(())) => Err(GuestFailure::NoResponse),
            Ok(Err(failure)) => {
                tracing::warn!(%failure, "guest request failed");
                Err(failure)
            }
            Err(join) => Err(GuestFailure::Trap(format!("guest task: {join}"))),
        },
    }
}

/// A background guest's pause: `pause`, then until the host is idle (at most
/// `MAX_STEP_ASIDE`), recorded in `stepped_aside` so that it does not count as CPU.
async fn step_aside(pause: Duration, stepped_aside: &AtomicU64) {
    tokio::time::sleep(pause).await;
    let waited = pause + cpu_priority::until_idle(MAX_STEP_ASIDE).await;
    stepped_aside.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
}

/// A short message for the client; the full error (with the guest's backtrace) goes
/// to the log.
fn classify(
    error: wasmtime::Error,
    store: &Store<GuestState>,
    timeout: Duration,
    memory: usize,
) -> GuestFailure {
    tracing::debug!(error = ?error, "guest error");
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            if store.data().started.elapsed() >= timeout {
                GuestFailure::Timeout(timeout)
            } else {
                GuestFailure::CpuBudget(EPOCH_TICK * store.data().cpu_ticks as u32)
            }
        }
        Some(Trap::StackOverflow) => GuestFailure::StackOverflow,
        Some(Trap::MemoryOutOfBounds) => GuestFailure::Trap(
            "out-of-bounds memory access (a stack overflow inside the guest's memory, or a bug)"
                .into(),
        ),
        Some(Trap::UnreachableCodeReached) => GuestFailure::Trap(format!(
            "the guest aborted (a panic, or an allocation beyond its memory limit of {} MiB)",
            memory >> 20
        )),
        Some(trap) => GuestFailure::Trap(format!("wasm trap: {trap}")),
        None => GuestFailure::Trap(error.root_cause().to_string()),
    }
}
