//! `nnhost bench …`: measuring tools behind `just bench` (tests/bench/run.py writes
//! docs/BENCHMARKS.md from their JSON output).
//!
//! - `bench ort`: the model's graph on the host's own [`CpuProvider`], timing only
//!   `Provider::run` — the ceiling the HTTP path is compared against.
//! - `bench http`: a closed-loop keep-alive HTTP/1.1 load client (hyper), one thread.
//!
//! [`CpuProvider`]: crate::providers::cpu::CpuProvider

pub mod http;
pub mod ort;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time raw ONNX Runtime runs of an embedding model (in process, no HTTP, no queue).
    Ort(ort::OrtArgs),
    /// Closed-loop HTTP/1.1 keep-alive load: C connections POSTing a JSON body.
    Http(http::HttpArgs),
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Ort(args) => ort::run(args),
        BenchCommand::Http(args) => http::run(args),
    }
}

/// Latency summary in milliseconds over samples in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let ms = |s: f64| s * 1e3;
        Self {
            count: samples.len(),
            mean_ms: ms(samples.iter().sum::<f64>() / samples.len() as f64),
            p50_ms: ms(percentile(samples, 50.0)),
            p90_ms: ms(percentile(samples, 90.0)),
            p99_ms: ms(percentile(samples, 99.0)),
            min_ms: ms(samples[0]),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes raw samples (seconds) as milliseconds, one per line, so a driver can merge
/// several runs before taking percentiles.
pub fn write_samples(path: &std::path::Path, samples: &[f64]) -> Result<()> {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(samples.len() * 10);
    for s in samples {
        let _ = writeln!(text, "{:.4}", s * 1e3);
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Three decimals are plenty for milliseconds and keep the JSON readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 1e-9);
        assert!((s.p99_ms - 99.0).abs() < 1e-9);
        assert!((s.max_ms - 100.0).abs() < 1e-9);
        assert_eq!(percentile(&[0.5], 99.0), 0.5);
    }
}
