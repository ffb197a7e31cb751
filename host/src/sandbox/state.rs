use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::request::RequestLimits;
use crate::api::{ApiState, ModelAccess};
use crate::cpu_priority::{self, BackgroundGuest, Foreground};

/// Everything one request's store holds. Made fresh per request and dropped with it.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing: OutgoingHttp,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub api: ApiState,
    pub(super) started: Instant,
    /// Epoch ticks seen while wasm was running: the request's CPU time, roughly.
    pub(super) cpu_ticks: u64,
    /// Those ticks less the ticks spent waiting for inference since (never below 0):
    /// past a short burst of them the guest turns background.
    pub(super) burst_ticks: u64,
    /// When the epoch deadline callback last ran (or the request started).
    pub(super) last_tick: Instant,
    /// The thread clock when the guest last started running or was last ticked.
    pub(super) cpu_mark: super::cpu_time::Mark,
    /// Until the guest computes past its burst: background guests wait for it.
    pub(super) foreground: Option<Foreground>,
    /// From then on: the guest runs only while the host is otherwise idle.
    pub(super) background: Option<BackgroundGuest>,
    /// Tells the request's task to move the guest to the background threads.
    pub(super) demoted: Arc<AtomicBool>,
    /// Nanoseconds a background guest spent stepping aside (not its CPU time).
    pub(super) stepped_aside: Arc<AtomicU64>,
    /// Ticks left of the slice a background guest gets after stepping aside for long.
    pub(super) forced_slice_ticks: u64,
}

impl GuestState {
    /// `background`: the request starts as a background guest (its tenant is on
    /// probation, see `Tenant::new_state`).
    pub fn new(access: ModelAccess, limits: &RequestLimits, background: bool) -> Self {
        // No environment, no arguments, no preopened directories, no sockets: a guest
        // sees nothing of the host but the imports we give it.
        let wasi = WasiCtx::builder().build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            outgoing: OutgoingHttp {
                allowed: limits.allow_outgoing_http,
            },
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(32)
                .tables(64)
                .memories(8)
                .table_elements(100_000)
                .build(),
            api: ApiState::new(access, limits.max_host_bytes, limits.max_resources),
            started: Instant::now(),
            cpu_ticks: 0,
            burst_ticks: 0,
            last_tick: Instant::now(),
            cpu_mark: Default::default(),
            foreground: (!background).then(cpu_priority::foreground_request),
            background: background.then(cpu_priority::background_guest),
            demoted: Arc::new(AtomicBool::new(background)),
            stepped_aside: Arc::new(AtomicU64::new(0)),
            forced_slice_ticks: 0,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// Outgoing HTTP from a guest: denied unless the tenant is allowed it.
struct OutgoingHttp {
    allowed: bool,
}

type SendFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: SendFuture,
    ) -> Box<
        dyn Future<
                Output = Result<(http::Response<WasiBody>, SendFuture), wasmtime_wasi_http::Error>,
            > + Send,
    > {
        _ = fut;
        if !self.allowed {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as SendFuture,
            ))
        })
    }
}
