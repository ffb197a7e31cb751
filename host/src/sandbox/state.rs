use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::request::RequestLimits;
use crate::api::{ApiState, ModelAccess};

/// Everything one request's store holds. Made fresh per request and dropped with it.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub api: ApiState,
    pub(super) started: Instant,
    /// Epoch ticks seen while wasm was running: the request's CPU time, roughly.
    pub(super) cpu_ticks: u64,
}

impl GuestState {
    pub fn new(access: ModelAccess, limits: &RequestLimits) -> Self {
        // No environment, no arguments, no preopened directories, no sockets: a guest
        // sees nothing of the host but the imports we give it.
        let wasi = WasiCtx::builder().build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(32)
                .tables(64)
                .memories(8)
                .table_elements(100_000)
                .build(),
            api: ApiState::new(access),
            started: Instant::now(),
            cpu_ticks: 0,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}
