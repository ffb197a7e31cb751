//! The local provider: ONNX Runtime's CPU execution provider with every session
//! option the seed tuned exposed through [`CpuOptions`].

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};
use parking_lot::Mutex;

use super::{GraphSignature, NamedTensors, Provider, ProviderError, TensorInfo};
use crate::config::{CpuOptions, ExecutionMode, OptimizationLevel, Spinning};
use crate::tensor::{DType, Tensor, TensorData};

pub struct CpuProvider {
    name: String,
    // `Session::run` takes `&mut self`. Each model has one worker thread feeding it
    // batches, so this lock is uncontended on the embedding path.
    session: Mutex<Session>,
    /// `spinning = "when-idle"`: the same graph with threads that spin within a run
    /// (and briefly after it), used while nothing else needs the cores.
    idle_session: Option<Mutex<Session>>,
    /// Sessions on a share of the cores each, for batches run side by side under load
    /// (empty: one batch at a time). See [`lane_count`].
    lanes: Vec<Mutex<Session>>,
    signature: GraphSignature,
}

/// How a session's intra-op threads wait for the next operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpinMode {
    Sleep,
    /// ORT's default: spin, also for a while after the run.
    Spin,
    /// Spin within a run and for [`POST_RUN_SPIN_US`] after it, then sleep.
    SpinShortly,
}

/// How long a spinning session's threads keep spinning after a run
/// (`session.intra_op.spin_duration_us`; ORT's own default spins ~25 ms). It bridges
/// the gap to the next run of a lone client: the answer's HTTP and guest work and
/// the next request's take ~0.5–0.8 ms for a short text, ~0.2 ms between decode
/// steps. Measured against stopping when the run ends (`session.force_spinning_stop`,
/// the thread then woken at the next run's first operator), servers side by side,
/// one short text per request: 1 client p50 2.51/2.56 → 2.26/2.43 ms, 4 clients
/// 703/649 → 759/713 req/s, 32 clients unchanged (1047/1014 vs 1004/1028); one
/// Gemma stream +4–5 %, SmolLM2 within noise. 3 ms bridged no better than 1.
const POST_RUN_SPIN_US: &str = "1000";

/// `cpu-x86_64`, `cpu-aarch64`: the label says which machine code really ran.
pub fn label() -> String {
    format!("cpu-{}", std::env::consts::ARCH)
}

/// Intra-op threads when the config says 0: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Intra-op threads a session of `options` gets.
pub fn threads(options: &CpuOptions) -> usize {
    if options.intra_op_threads == 0 {
        default_threads()
    } else {
        options.intra_op_threads
    }
}

/// Lanes for `options.lanes`: at least 1, at most one per intra-op thread.
///
/// Measured on the 2-core machine (docs/PROVIDERS.md): two one-thread sessions running
/// batches of 8–16 side by side embed 25–30 % more texts a second than one two-thread
/// session running them in turn (ONNX Runtime's two threads wait for each other at
/// every operator, and on a VM a waking thread is slow), but over HTTP the gain
/// shrinks to 5–15 % while p99 grows by a third or more: a batch on one core takes
/// longer, and a request that just missed one waits for it. So one lane by default.
pub fn lane_count(options: &CpuOptions) -> usize {
    options.lanes.clamp(1, threads(options))
}

impl CpuProvider {
    pub fn load(model: &Path, options: &CpuOptions) -> Result<Self> {
        let (session, idle_session) = build_sessions(model, options, SessionLog::Warnings)
            .with_context(|| format!("loading {} into ONNX Runtime", model.display()))?;
        let signature = signature(&session)?;
        Ok(Self {
            name: label(),
            session: Mutex::new(session),
            idle_session: idle_session.map(Mutex::new),
            lanes: Vec::new(),
            signature,
        })
    }

    /// [`CpuProvider::load`] plus the lanes `options.lanes` asks for: sessions that
    /// each run one batch on their share of the intra-op threads, beside each other.
    pub fn load_with_lanes(model: &Path, options: &CpuOptions) -> Result<Self> {
        let mut provider = Self::load(model, options)?;
        let lanes = lane_count(options);
        if lanes > 1 {
            let mut lane = options.clone();
            lane.intra_op_threads = (threads(options) / lanes).max(1);
            lane.execution_mode = ExecutionMode::Sequential;
            provider.lanes = (0..lanes)
                .map(|_| build_session(model, &lane, SpinMode::Sleep, SessionLog::Warnings))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("loading the lanes of {}", model.display()))?
                .into_iter()
                .map(Mutex::new)
                .collect();
        }
        Ok(provider)
    }

    pub fn signature(&self) -> &GraphSignature {
        &self.signature
    }
}

/// Which of ONNX Runtime's messages about a session reach the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionLog {
    Warnings,
    /// Errors only: the prepared decoders' `logits_to_keep` is an overridable
    /// initializer on purpose, which ORT warns about at every load ("will not be
    /// treated as constant value"): alarming noise at each start.
    ErrorsOnly,
}

/// The sessions `options.spinning` asks for: the one every run may use, and for
/// `when-idle` a second one whose threads spin within a run and briefly after it,
/// for a quiet host.
pub(crate) fn build_sessions(
    model: &Path,
    options: &CpuOptions,
    log: SessionLog,
) -> Result<(Session, Option<Session>)> {
    let build = |spin| build_session(model, options, spin, log);
    Ok(match options.spinning {
        Spinning::Off => (build(SpinMode::Sleep)?, None),
        Spinning::Always => (build(SpinMode::Spin)?, None),
        Spinning::WhenIdle => (build(SpinMode::Sleep)?, Some(build(SpinMode::SpinShortly)?)),
    })
}

// ort's builder error carries the whole builder; it is converted right away.
#[allow(clippy::result_large_err)]
fn build_session(
    model: &Path,
    options: &CpuOptions,
    spin: SpinMode,
    log: SessionLog,
) -> Result<Session> {
    let level = match options.optimization_level {
        OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::Layout => GraphOptimizationLevel::Level3,
        OptimizationLevel::All => GraphOptimizationLevel::All,
    };
    let intra = threads(options);
    let cpu = ep::CPU::default()
        .with_arena_allocator(options.memory_arena)
        .build();
    let session = Session::builder(super::ort_env::environment()?)?;
    let session = Ok(session)
        .and_then(|b| b.with_execution_providers([cpu]))
        .and_then(|b| b.with_optimization_level(level))
        .and_then(|b| b.with_parallel_execution(options.execution_mode == ExecutionMode::Parallel))
        .and_then(|b| b.with_intra_threads(intra))
        .and_then(|b| b.with_inter_threads(options.inter_op_threads.max(1)))
        .and_then(|b| b.with_memory_pattern(options.memory_pattern))
        .and_then(|b| b.with_intra_op_spinning(spin != SpinMode::Sleep))
        .and_then(|b| b.with_inter_op_spinning(spin != SpinMode::Sleep))
        .and_then(|b| match spin {
            SpinMode::SpinShortly => b
                .with_config_entry("session.intra_op.spin_duration_us", POST_RUN_SPIN_US)
                .and_then(|b| {
                    b.with_config_entry("session.inter_op.spin_duration_us", POST_RUN_SPIN_US)
                }),
            _ => Ok(b),
        })
        .and_then(|b| match log {
            SessionLog::ErrorsOnly => b.with_log_level(ort::logging::LogLevel::Error),
            SessionLog::Warnings => Ok(b),
        })
        .map_err(ort::Error::<()>::from)?
        .commit_from_file(model)?;
    Ok(session)
}

fn signature(session: &Session) -> Result<GraphSignature> {
    let info = |outlets: &[ort::value::Outlet]| -> Result<Vec<TensorInfo>> {
        outlets
            .iter()
            .map(|o| match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok(TensorInfo {
                    name: o.name().to_string(),
                    dtype: dtype_of(*ty).ok_or_else(|| {
                        anyhow!("{}: element type {ty:?} is not supported", o.name())
                    })?,
                    shape: shape.iter().copied().collect(),
                }),
                other => Err(anyhow!(
                    "{}: only tensors are supported, not {other:?}",
                    o.name()
                )),
            })
            .collect()
    };
    Ok(GraphSignature {
        inputs: info(session.inputs())?,
        outputs: info(session.outputs())?,
    })
}

fn dtype_of(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        _ => return None,
    })
}

fn to_ort(tensor: Tensor) -> ort::Result<DynValue> {
    use ort::value::Tensor as T;
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    Ok(match tensor.data {
        TensorData::F16(v) => T::from_array((
            shape,
            v.into_iter().map(half::f16::from_bits).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
        TensorData::BF16(v) => T::from_array((
            shape,
            v.into_iter().map(half::bf16::from_bits).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
        TensorData::F32(v) => T::from_array((shape, v))?.into_dyn(),
        TensorData::F64(v) => T::from_array((shape, v))?.into_dyn(),
        TensorData::U8(v) => T::from_array((shape, v))?.into_dyn(),
        TensorData::I32(v) => T::from_array((shape, v))?.into_dyn(),
        TensorData::I64(v) => T::from_array((shape, v))?.into_dyn(),
    })
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, ProviderError> {
    let backend = |e: ort::Error| ProviderError::Backend(format!("output {name}: {e}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(ProviderError::Backend(format!(
            "output {name} is not a tensor"
        )));
    };
    macro_rules! extract {
        ($t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(backend)?;
            (shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), data)
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => {
            let (s, d) = extract!(f32);
            (s, TensorData::F32(d.to_vec()))
        }
        TensorElementType::Float64 => {
            let (s, d) = extract!(f64);
            (s, TensorData::F64(d.to_vec()))
        }
        TensorElementType::Int64 => {
            let (s, d) = extract!(i64);
            (s, TensorData::I64(d.to_vec()))
        }
        TensorElementType::Int32 => {
            let (s, d) = extract!(i32);
            (s, TensorData::I32(d.to_vec()))
        }
        TensorElementType::Uint8 => {
            let (s, d) = extract!(u8);
            (s, TensorData::U8(d.to_vec()))
        }
        TensorElementType::Float16 => {
            let (s, d) = extract!(half::f16);
            (s, TensorData::F16(d.iter().map(|x| x.to_bits()).collect()))
        }
        TensorElementType::Bfloat16 => {
            let (s, d) = extract!(half::bf16);
            (s, TensorData::BF16(d.iter().map(|x| x.to_bits()).collect()))
        }
        other => {
            return Err(ProviderError::Backend(format!(
                "output {name}: element type {other:?} is not supported"
            )))
        }
    };
    Tensor::new(shape, data).map_err(|e| ProviderError::Backend(e.to_string()))
}

impl Provider for CpuProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, ProviderError> {
        self.signature.check_inputs(&inputs)?;
        let rows = inputs
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(0);
        let session = match &self.idle_session {
            Some(idle) if spin_pays(rows) => idle,
            _ => &self.session,
        };
        run_session(session, inputs)
    }

    fn lanes(&self) -> usize {
        self.lanes.len().max(1)
    }

    fn run_on_lane(
        &self,
        lane: usize,
        inputs: NamedTensors,
    ) -> Result<NamedTensors, ProviderError> {
        let Some(session) = self.lanes.get(lane) else {
            return self.run(inputs);
        };
        self.signature.check_inputs(&inputs)?;
        run_session(session, inputs)
    }
}

/// Runs `session`, counted as a graph run (background guests wait for it). The
/// inputs are converted before the session is locked.
fn run_session(
    session: &Mutex<Session>,
    inputs: NamedTensors,
) -> Result<NamedTensors, ProviderError> {
    let values = inputs
        .into_iter()
        .map(|(name, tensor)| Ok((name, to_ort(tensor)?)))
        .collect::<ort::Result<Vec<_>>>()
        .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
    let mut session = session.lock();
    let _run = crate::cpu_priority::graph_run();
    // ORT reports inputs the graph cannot take (e.g. a token id beyond the
    // vocabulary) as INVALID_ARGUMENT: the caller's fault, not the backend's.
    let outputs = session.run(values).map_err(|e| match e.code() {
        ort::ErrorCode::InvalidArgument => ProviderError::InvalidInput(e.to_string()),
        _ => ProviderError::Backend(e.to_string()),
    })?;
    outputs
        .iter()
        .map(|(name, value)| Ok((name.to_string(), from_ort(name, &value)?)))
        .collect()
}

/// Batches of at most this many rows spin even while other requests are in flight.
const SPIN_ROWS_UNDER_LOAD: usize = 4;

/// Whether a run of `rows` should take the spinning session. Spinning threads pay
/// when no other request or graph needs the cores (the one in flight is the request
/// this run serves). Under load they still pay for a small batch: its operators are
/// so short that waking the threads for each is much of the run, while the HTTP work
/// beside it is light. Measured over HTTP on two cores (docs/PROVIDERS.md): 4 clients
/// 718 → 835 req/s; 16 and 32 clients, whose batches are ~16 and sleep, unchanged.
fn spin_pays(rows: usize) -> bool {
    crate::cpu_priority::quiet(1)
        || (rows <= SPIN_ROWS_UNDER_LOAD && !crate::cpu_priority::graph_running())
}
