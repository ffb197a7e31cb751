use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::cache::ComponentCache;
use super::state::GuestState;
use crate::config::SandboxConfig;

/// How often the epoch advances; every deadline and CPU budget is counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

const KEEP_RESIDENT_BYTES: usize = 2 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
const MAX_UNUSED_WARM_SLOTS: u32 = 32;

pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: ComponentCache,
}

impl Sandbox {
    /// `max_memory_bytes` is the largest linear memory any tenant may have.
    pub fn new(config: &SandboxConfig, max_memory_bytes: usize) -> Result<Arc<Self>> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size(max_memory_bytes)
            // A finished request's memory is reset by zeroing only the pages it touched
            // (found with Linux's PAGEMAP_SCAN), up to this much, instead of `madvise`:
            // no page faults when the tenant's next request reuses the slot, and no TLB
            // shoot-down interrupting the cores that run inference.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(Enabled::Auto)
            // Slots kept warm for reuse bound what stays resident:
            // at most this many × KEEP_RESIDENT_BYTES beyond the slots in use.
            .max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            // Guest stack overflow must trap cleanly, well before the host's own stack.
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20);
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::api::add_to_linker(&mut linker, |state: &mut GuestState| &mut state.api)?;

        // A plain thread, so it keeps time even if the async runtime is busy.
        super::ticker::spawn(engine.weak())?;

        // A graph starting while guests run in the background interrupts them now,
        // not at the next tick.
        let weak = engine.weak();
        crate::cpu_priority::set_preempt_hook(move || {
            if let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
            }
        });

        let cache = ComponentCache::new(&config.cache_dir, &engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            cache,
        }))
    }

    /// Compiles (or loads the cached compilation of) a component and checks it can
    /// serve as a router: every import satisfiable, `wasi:http/incoming-handler` exported.
    pub fn prepare_bytes(&self, bytes: &[u8]) -> Result<ProxyPre<GuestState>> {
        let component: Component = self.cache.load(&self.engine, bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something nnhost does not provide")?;
        ProxyPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export wasi:http/incoming-handler")
    }
}
