//! Which provider runs a batch. Small batches stay on the local CPU; large ones go
//! to the remote provider while it is healthy. A remote error, timeout or malformed
//! reply is retried on the CPU (the client never sees it), and a circuit breaker
//! keeps a failing remote out until its readiness probe passes again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::remote::RemoteProvider;
use super::{GraphSignature, NamedTensors, Provider, ProviderError};
use crate::config::{RoutingConfig, RoutingPolicy};
use crate::metrics::metrics;

pub struct ProviderRouter {
    model: String,
    local: Arc<dyn Provider>,
    remote: Option<Remote>,
    config: RoutingConfig,
    signature: GraphSignature,
    stats: Mutex<Vec<ProviderStats>>,
    adaptive: Mutex<Adaptive>,
}

struct Remote {
    provider: Arc<RemoteProvider>,
    breaker: Arc<Breaker>,
}

#[derive(Default)]
struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    probing: AtomicBool,
}

#[derive(Default)]
struct ProviderStats {
    name: String,
    ok: u64,
    errors: u64,
    last_error: Option<String>,
    latencies_ms: VecDeque<f64>,
}

/// Moving averages of milliseconds per input, per provider and batch-size bucket.
#[derive(Default)]
struct Adaptive {
    ms_per_input: [[Option<f64>; 12]; 2],
    draws: u64,
}

const LOCAL: usize = 0;
const REMOTE: usize = 1;

fn bucket(batch: usize) -> usize {
    (usize::BITS - batch.max(1).leading_zeros()).min(11) as usize
}

impl ProviderRouter {
    pub fn new(
        model: &str,
        local: Arc<dyn Provider>,
        remote: Option<Arc<RemoteProvider>>,
        config: RoutingConfig,
        signature: GraphSignature,
    ) -> Arc<Self> {
        let mut stats = vec![ProviderStats {
            name: local.name().to_string(),
            ..Default::default()
        }];
        if let Some(r) = &remote {
            stats.push(ProviderStats {
                name: r.name().to_string(),
                ..Default::default()
            });
        }
        Arc::new(Self {
            model: model.to_string(),
            local,
            remote: remote.map(|provider| Remote {
                provider,
                breaker: Arc::default(),
            }),
            config,
            signature,
            stats: Mutex::new(stats),
            adaptive: Mutex::new(Adaptive::default()),
        })
    }

    /// Runs a batch of `size` inputs; returns the outputs and the provider that made them.
    pub fn run(
        self: &Arc<Self>,
        size: usize,
        inputs: NamedTensors,
    ) -> Result<(NamedTensors, String), ProviderError> {
        self.run_on(size, inputs, None)
    }

    /// Lanes of the local provider: batches that may run side by side.
    pub fn local_lanes(&self) -> usize {
        self.local.lanes()
    }

    /// [`ProviderRouter::run`], on lane `lane` of the local provider when the batch
    /// stays local (`None`: on all of its cores).
    pub fn run_on(
        self: &Arc<Self>,
        size: usize,
        inputs: NamedTensors,
        lane: Option<usize>,
    ) -> Result<(NamedTensors, String), ProviderError> {
        if let Some(remote) = self.remote.as_ref().filter(|_| self.prefer_remote(size)) {
            let started = Instant::now();
            let result = remote
                .provider
                .run(inputs.clone())
                .and_then(|out| self.check_reply(out));
            let elapsed = started.elapsed();
            match result {
                Ok(outputs) => {
                    remote.breaker.failures.store(0, Ordering::Relaxed);
                    self.record(REMOTE, size, elapsed, None);
                    return Ok((outputs, remote.provider.name().to_string()));
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::warn!(model = %self.model, error = %message, "remote provider failed; running the batch on the CPU");
                    let reason = if message.contains("no reply within") {
                        "timeout"
                    } else {
                        "error"
                    };
                    metrics()
                        .fallbacks
                        .with_label_values(&[&self.model, reason])
                        .inc();
                    self.record(REMOTE, size, elapsed, Some(message));
                    self.remote_failed(remote);
                }
            }
        }
        let started = Instant::now();
        let result = match lane {
            Some(lane) => self.local.run_on_lane(lane, inputs),
            None => self.local.run(inputs),
        };
        self.record(
            LOCAL,
            size,
            started.elapsed(),
            result.as_ref().err().map(|e| e.to_string()),
        );
        result.map(|outputs| (outputs, self.local.name().to_string()))
    }

    fn prefer_remote(&self, size: usize) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        if remote.breaker.open.load(Ordering::Relaxed) {
            return false;
        }
        match self.config.policy {
            RoutingPolicy::Threshold => size >= self.config.threshold,
            RoutingPolicy::Adaptive => {
                let mut adaptive = self.adaptive.lock();
                adaptive.draws += 1;
                let b = bucket(size);
                let (local, remote) = (
                    adaptive.ms_per_input[LOCAL][b],
                    adaptive.ms_per_input[REMOTE][b],
                );
                let explore_every = (1.0 / self.config.explore.clamp(0.001, 1.0)).round() as u64;
                let preferred = match (local, remote) {
                    (Some(l), Some(r)) => r < l,
                    (None, _) => false,
                    (Some(_), None) => true,
                };
                if adaptive.draws.is_multiple_of(explore_every) {
                    !preferred
                } else {
                    preferred
                }
            }
        }
    }

    /// A reply must carry every output the graph declares, with the declared dtype and rank.
    fn check_reply(&self, outputs: NamedTensors) -> Result<NamedTensors, ProviderError> {
        for expected in &self.signature.outputs {
            let Some((_, t)) = outputs.iter().find(|(n, _)| n == &expected.name) else {
                return Err(ProviderError::Backend(format!(
                    "malformed reply: no output {:?}",
                    expected.name
                )));
            };
            if t.dtype() != expected.dtype || !expected.shape_fits(&t.shape) {
                return Err(ProviderError::Backend(format!(
                    "malformed reply: output {:?} is {:?} {:?}, expected {:?} {:?}",
                    expected.name,
                    t.dtype(),
                    t.shape,
                    expected.dtype,
                    expected.shape
                )));
            }
        }
        Ok(outputs)
    }

    fn remote_failed(self: &Arc<Self>, remote: &Remote) {
        let failures = remote.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.config.breaker_failures
            && !remote.breaker.open.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(model = %self.model, failures, "circuit breaker opened for the remote provider");
            metrics()
                .breaker_open
                .with_label_values(&[remote.provider.name()])
                .set(1);
            self.start_probing(remote);
        }
    }

    /// While the breaker is open, probe readiness; close it when a probe passes.
    fn start_probing(self: &Arc<Self>, remote: &Remote) {
        if remote.breaker.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let provider = remote.provider.clone();
        let breaker = remote.breaker.clone();
        let interval = Duration::from_millis(self.config.probe_interval_ms);
        let spawned = std::thread::Builder::new().name("remote-probe".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                if weak.upgrade().is_none() {
                    break;
                }
                match provider.probe() {
                    Ok(()) => {
                        tracing::info!(endpoint = %provider.endpoint(), "remote provider is ready again; closing the breaker");
                        breaker.failures.store(0, Ordering::Relaxed);
                        breaker.open.store(false, Ordering::Relaxed);
                        metrics().breaker_open.with_label_values(&[provider.name()]).set(0);
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "remote probe failed"),
                }
            }
            breaker.probing.store(false, Ordering::Relaxed);
        });
        if spawned.is_err() {
            remote.breaker.probing.store(false, Ordering::Relaxed);
        }
    }

    fn record(&self, index: usize, size: usize, elapsed: Duration, error: Option<String>) {
        let ms = elapsed.as_secs_f64() * 1e3;
        let mut stats = self.stats.lock();
        let Some(s) = stats.get_mut(index) else {
            return;
        };
        let outcome = if error.is_some() { "error" } else { "ok" };
        metrics()
            .provider_runs
            .with_label_values(&[&s.name, &self.model, outcome])
            .inc();
        metrics()
            .provider_latency
            .with_label_values(&[&s.name, &self.model])
            .observe(elapsed.as_secs_f64());
        match error {
            Some(e) => {
                s.errors += 1;
                s.last_error = Some(e);
            }
            None => {
                s.ok += 1;
                if s.latencies_ms.len() == 1024 {
                    s.latencies_ms.pop_front();
                }
                s.latencies_ms.push_back(ms);
                let mut adaptive = self.adaptive.lock();
                let slot = &mut adaptive.ms_per_input[index][bucket(size)];
                let per_input = ms / size.max(1) as f64;
                *slot = Some(slot.map_or(per_input, |old| 0.8 * old + 0.2 * per_input));
            }
        }
    }

    /// For `/status`: each provider's state, breaker, counts and latency percentiles.
    pub fn status(&self) -> Value {
        let stats = self.stats.lock();
        let providers: Vec<Value> = stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut sorted: Vec<f64> = s.latencies_ms.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let pct = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied();
                let breaker = if i == REMOTE {
                    self.remote.as_ref().map(|r| if r.breaker.open.load(Ordering::Relaxed) { "open" } else { "closed" })
                } else {
                    None
                };
                json!({
                    "name": s.name,
                    "kind": if i == LOCAL { "cpu" } else { "remote" },
                    "endpoint": if i == REMOTE { self.remote.as_ref().map(|r| r.provider.endpoint()) } else { None },
                    "state": if breaker == Some("open") { "unavailable" } else { "ready" },
                    "breaker": breaker,
                    "requests": s.ok + s.errors,
                    "errors": s.errors,
                    "last_error": s.last_error,
                    "latency_ms": {"p50": pct(0.5), "p95": pct(0.95)},
                })
            })
            .collect();
        let choice: Vec<Value> = if self.remote.is_some()
            && self.config.policy == RoutingPolicy::Adaptive
        {
            let adaptive = self.adaptive.lock();
            (0..12)
                .filter_map(|b| {
                    let (l, r) = (adaptive.ms_per_input[LOCAL][b], adaptive.ms_per_input[REMOTE][b]);
                    (l.is_some() || r.is_some()).then(|| {
                        json!({"batch_size_from": 1usize << b.saturating_sub(1), "local_ms_per_input": l,
                               "remote_ms_per_input": r,
                               "choice": if matches!((l, r), (Some(l), Some(r)) if r < l) || (l.is_none() && r.is_some()) { "remote" } else { "local" }})
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "policy": match self.config.policy { RoutingPolicy::Threshold => "threshold", RoutingPolicy::Adaptive => "adaptive" },
            "threshold": self.config.threshold,
            "providers": providers,
            "adaptive_choice": choice,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::TensorInfo;
    use crate::tensor::{DType, Tensor, TensorData};

    struct Fixed(&'static str, Result<(), &'static str>);

    impl Provider for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn run(&self, _: NamedTensors) -> Result<NamedTensors, ProviderError> {
            self.1.map_err(|e| ProviderError::Backend(e.into()))?;
            Ok(vec![(
                "y".into(),
                Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap(),
            )])
        }
    }

    fn router(local: Fixed) -> Arc<ProviderRouter> {
        let signature = GraphSignature {
            inputs: vec![],
            outputs: vec![TensorInfo {
                name: "y".into(),
                dtype: DType::F32,
                shape: vec![-1],
            }],
        };
        ProviderRouter::new(
            "m",
            Arc::new(local),
            None,
            RoutingConfig::default(),
            signature,
        )
    }

    #[test]
    fn without_a_remote_everything_runs_locally() {
        let r = router(Fixed("cpu-test", Ok(())));
        let (_, provider) = r.run(100, vec![]).unwrap();
        assert_eq!(provider, "cpu-test");
        assert_eq!(r.status()["providers"][0]["requests"], 1);
    }

    #[test]
    fn replies_missing_outputs_are_malformed() {
        let r = router(Fixed("cpu-test", Ok(())));
        assert!(r.check_reply(vec![]).is_err());
        let wrong = vec![(
            "y".into(),
            Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap(),
        )];
        assert!(r.check_reply(wrong).is_err());
    }

    #[test]
    fn buckets_grow_by_powers_of_two() {
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 3);
        assert_eq!(bucket(100_000), 11);
    }
}
