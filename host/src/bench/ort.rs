//! `nnhost bench ort`: raw ONNX Runtime on the host's own [`CpuProvider`] — the same
//! graph file, the same session options and the same input layout the embedding
//! queue builds (per-batch padding to the longest input). Only `Provider::run` is
//! timed: tokenizing, padding and input copies happen before the clock starts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{round3, Summary};
use crate::config::{Config, CpuOptions, ExecutionMode, OptimizationLevel, Spinning};
use crate::models::layout::SentenceTransformerFolder;
use crate::providers::cpu::{threads, CpuProvider};
use crate::providers::{ort_env, NamedTensors, Provider};
use crate::tensor::{Tensor, TensorData};

#[derive(clap::Args, Debug)]
pub struct OrtArgs {
    /// TOML configuration; without it the embedded default is used. The model's
    /// `cpu` options there are the starting point the flags below override.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model name in the config (default: the first model).
    #[arg(long)]
    model: Option<String>,
    /// A model folder (sentence-transformers layout) instead of the config's path.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Text to embed; repeat for several. The batch cycles through them.
    #[arg(long = "text", default_value = "The weather is lovely today.")]
    texts: Vec<String>,
    /// Rows per run.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Timed runs; 0 = as many as fit in --seconds.
    #[arg(long, default_value_t = 0)]
    iterations: usize,
    /// Time budget for the timed runs (when --iterations is 0; otherwise a cap).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Idle milliseconds between timed runs (untimed). 0 = back to back; a pause
    /// mimics a server's request cadence, where ORT threads may go idle between runs.
    #[arg(long, default_value_t = 0.0)]
    pause_ms: f64,
    /// sequential | parallel
    #[arg(long, value_parser = parse_enum::<ExecutionMode>)]
    execution_mode: Option<ExecutionMode>,
    /// Intra-op threads; 0 = one per core.
    #[arg(long)]
    intra_threads: Option<usize>,
    /// Inter-op threads (parallel execution mode only).
    #[arg(long)]
    inter_threads: Option<usize>,
    /// Spin-wait between operators: off | always | when-idle (or false | true)
    #[arg(long)]
    spinning: Option<Spinning>,
    /// disable | basic | extended | layout | all
    #[arg(long, value_parser = parse_enum::<OptimizationLevel>)]
    opt_level: Option<OptimizationLevel>,
    /// CPU memory arena: true | false
    #[arg(long, action = clap::ArgAction::Set)]
    arena: Option<bool>,
    /// Memory pattern optimisation: true | false
    #[arg(long, action = clap::ArgAction::Set)]
    mem_pattern: Option<bool>,
    /// Sessions running batches side by side (`cpu.lanes`): with more than 1, each
    /// lane runs its own batches back to back on its share of the threads, all at
    /// once, and texts/s counts them together.
    #[arg(long)]
    lanes: Option<usize>,
    /// Also write every timed sample (ms, one per line) to this file.
    #[arg(long)]
    latencies_out: Option<PathBuf>,
}

/// The config enums are serde-only; parse their lowercase names the same way.
fn parse_enum<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|e| e.to_string())
}

fn lower_debug(x: impl std::fmt::Debug) -> String {
    format!("{x:?}").to_ascii_lowercase()
}

pub fn run(args: OrtArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let config = Config::load(args.config.as_deref())?;
    let model = match &args.model {
        Some(name) => config
            .models
            .iter()
            .find(|m| &m.name == name)
            .with_context(|| format!("no model {name:?} in the config"))?,
        None => config.models.first().context("the config has no models")?,
    };
    let mut options: CpuOptions = model.cpu.clone();
    if let Some(v) = args.execution_mode {
        options.execution_mode = v;
    }
    if let Some(v) = args.intra_threads {
        options.intra_op_threads = v;
    }
    if let Some(v) = args.inter_threads {
        options.inter_op_threads = v;
    }
    if let Some(v) = args.spinning {
        options.spinning = v;
    }
    if let Some(v) = args.opt_level {
        options.optimization_level = v;
    }
    if let Some(v) = args.arena {
        options.memory_arena = v;
    }
    if let Some(v) = args.mem_pattern {
        options.memory_pattern = v;
    }
    if let Some(v) = args.lanes {
        options.lanes = v;
    }

    let library = ort_env::init(&config.onnxruntime.library)?;
    let dir = args.model_dir.clone().unwrap_or_else(|| model.path.clone());
    let folder = SentenceTransformerFolder::read(&dir)?;
    let load_started = Instant::now();
    let provider = CpuProvider::load_with_lanes(&folder.onnx, &options)?;
    let lanes = provider.lanes();
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;

    // Same tokenizer set-up as `EmbeddingModel::load`: no fixed padding, no truncation.
    let tokenizer = crate::models::load_tokenizer(&folder.tokenizer)?;
    let encoded: Vec<(Vec<u32>, Vec<u32>)> = args
        .texts
        .iter()
        .map(|t| {
            let e = tokenizer
                .encode_fast(t.as_str(), true)
                .map_err(|e| anyhow!("tokenizing {t:?}: {e}"))?;
            Ok((e.get_ids().to_vec(), e.get_type_ids().to_vec()))
        })
        .collect::<Result<_>>()?;
    let rows: Vec<&(Vec<u32>, Vec<u32>)> = encoded.iter().cycle().take(args.batch).collect();
    let inputs = pad_batch(&provider, &rows)?;
    let width = inputs.first().map(|(_, t)| t.shape[1]).unwrap_or(0);

    let timed = |lane: Option<usize>, inputs: NamedTensors| -> Result<f64> {
        let started = Instant::now();
        let outputs = match lane {
            Some(lane) => provider.run_on_lane(lane, inputs),
            None => provider.run(inputs),
        }
        .map_err(|e| anyhow!("run: {e}"))?;
        let elapsed = started.elapsed().as_secs_f64();
        drop(outputs);
        Ok(elapsed)
    };
    let budget = std::time::Duration::from_secs_f64(args.seconds.max(0.0));
    let pause = std::time::Duration::from_secs_f64(args.pause_ms.max(0.0) / 1e3);
    // Each lane (or the whole provider) runs back to back; with lanes, all at once.
    let run_loop = |lane: Option<usize>| -> Result<Vec<f64>> {
        for _ in 0..args.warmup {
            timed(lane, inputs.clone())?;
        }
        let mut samples = Vec::new();
        let started = Instant::now();
        loop {
            if args.iterations > 0 && samples.len() >= args.iterations {
                break;
            }
            if started.elapsed() >= budget && (args.iterations == 0 || !samples.is_empty()) {
                break;
            }
            let copy = inputs.clone();
            if pause > std::time::Duration::ZERO {
                std::thread::sleep(pause);
            }
            samples.push(timed(lane, copy)?);
        }
        Ok(samples)
    };
    let mut samples = if lanes > 1 {
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..lanes)
                .map(|lane| scope.spawn(move || run_loop(Some(lane))))
                .collect();
            runs.into_iter()
                .map(|run| run.join().map_err(|_| anyhow!("a lane panicked"))?)
                .collect::<Result<Vec<_>>>()
        })?
        .concat()
    } else {
        run_loop(None)?
    };
    if let Some(path) = &args.latencies_out {
        super::write_samples(path, &samples)?;
    }
    let summary = Summary::of(&mut samples);
    let mean_s = summary.mean_ms / 1e3;
    let texts_per_s = if mean_s > 0.0 {
        (args.batch * lanes) as f64 / mean_s
    } else {
        0.0
    };
    let intra = threads(&options);
    let report = json!({
        "model": dir.display().to_string(),
        "onnx": folder.onnx.display().to_string(),
        "ort_library": library.display().to_string(),
        "provider": provider.name(),
        "batch": args.batch,
        "tokens_per_row": width,
        "iterations": summary.count,
        "warmup": args.warmup,
        "pause_ms": args.pause_ms,
        "load_ms": round3(load_ms),
        "p50_ms": round3(summary.p50_ms),
        "p90_ms": round3(summary.p90_ms),
        "p99_ms": round3(summary.p99_ms),
        "mean_ms": round3(summary.mean_ms),
        "min_ms": round3(summary.min_ms),
        "max_ms": round3(summary.max_ms),
        "texts_per_s": round3(texts_per_s),
        "options": {
            "execution_mode": lower_debug(options.execution_mode),
            "intra_op_threads": intra,
            "inter_op_threads": options.inter_op_threads.max(1),
            "spinning": options.spinning.name(),
            "lanes": lanes,
            "optimization_level": lower_debug(options.optimization_level),
            "memory_arena": options.memory_arena,
            "memory_pattern": options.memory_pattern,
        },
    });
    println!("{report}");
    Ok(())
}

/// Pads the rows to the longest one, as the embedding queue does, in the graph's input order.
fn pad_batch(provider: &CpuProvider, rows: &[&(Vec<u32>, Vec<u32>)]) -> Result<NamedTensors> {
    let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let n = rows.len();
    let mut ids = vec![0i64; n * width];
    let mut mask = vec![0i64; n * width];
    let mut types = vec![0i64; n * width];
    for (r, (row_ids, row_types)) in rows.iter().enumerate() {
        for (c, (&id, &ty)) in row_ids.iter().zip(row_types).enumerate() {
            ids[r * width + c] = id as i64;
            mask[r * width + c] = 1;
            types[r * width + c] = ty as i64;
        }
    }
    let mut inputs = Vec::new();
    for input in &provider.signature().inputs {
        let data = match input.name.as_str() {
            "input_ids" => ids.clone(),
            "attention_mask" => mask.clone(),
            "token_type_ids" => types.clone(),
            other => bail!("graph input {other:?} is not an embedding-model input"),
        };
        inputs.push((
            input.name.clone(),
            Tensor::new(vec![n, width], TensorData::I64(data))?,
        ));
    }
    Ok(inputs)
}
