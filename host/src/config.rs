//! Configuration: an embedded default (`host/config/default.toml`) that `--config FILE`
//! replaces. Everything a deployment may want to tune is here, with defaults that
//! were chosen by measurement (see docs/BENCHMARKS.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub onnxruntime: OrtConfig,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// The admin API (`/admin/...`: deploy components, add and remove tenants, usage).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable holding the admin token; the admin API is off when unset.
    pub token_env: String,
    /// Or the token's sha256 (hex), when the token should not sit in the environment.
    pub token_sha256: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: "NNHOST_ADMIN_TOKEN".into(),
            token_sha256: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// After SIGTERM/SIGINT: how long requests in flight may take to finish.
    pub shutdown_grace_ms: u64,
    /// Web origins whose pages may call the API from a browser (see `server::cors`).
    pub cors_allow_origins: Vec<String>,
    /// Serve `/metrics` to anyone, not only the operator (a scraper on a private
    /// network). Its series name every tenant.
    pub public_metrics: bool,
    /// How long a client may take to send a request's head, and how long an idle
    /// keep-alive connection stays open (HTTP/1).
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's whole body; slower uploads get
    /// 408, so a trickling client cannot hold a connection's request open forever.
    pub body_read_timeout_ms: u64,
    /// Most connections open at once; further clients wait in the listen backlog until
    /// one closes. 0: the open-file limit less 256 descriptors for the host itself.
    pub max_connections: usize,
    /// Most request-body bytes held in memory at once, over all requests (bodies are
    /// read before a tenant's slot is taken); a body that would pass it gets 503.
    /// 0: no budget.
    pub max_buffered_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().unwrap(),
            max_body_bytes: 2 * 1024 * 1024,
            shutdown_grace_ms: 30_000,
            cors_allow_origins: Vec::new(),
            public_metrics: false,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            max_connections: 0,
            max_buffered_body_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrtConfig {
    /// Path to libonnxruntime.so; empty means "find it" (see `providers::ort_env`).
    pub library: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients use (`model` in requests).
    pub name: String,
    /// A folder in the Hugging Face sentence-transformers layout (what `models/prepare.py`
    /// writes, and what a downloaded HF repository already is).
    /// A graph model's path may be the `.onnx` file itself.
    pub path: PathBuf,
    /// "embedding", "chat", "completion" or "graph" (a bare ONNX graph for the `graph`
    /// interface and `/v2`); default: read from the folder, "graph" when `path` is a file.
    pub kind: Option<String>,
    /// The ONNX file inside the folder (e.g. "onnx/model_fp32.onnx"); default onnx/model.onnx.
    pub onnx: Option<PathBuf>,
    /// Inputs longer than this many tokens are rejected (or cut, when the request asks
    /// for truncation). Default: the folder's `sentence_bert_config.json` max_seq_length.
    pub max_tokens: Option<usize>,
    /// Cut inputs longer than `max_tokens` instead of answering 400. Off by default:
    /// silently embedding part of a text is a surprise a client should opt into.
    #[serde(default)]
    pub truncate: bool,
    /// Most inputs in one embeddings call.
    #[serde(default = "default_max_inputs")]
    pub max_inputs: usize,
    /// Pooling override ("mean", "cls", "max"); default from `1_Pooling/config.json`.
    pub pooling: Option<String>,
    /// L2-normalise vectors; default from `modules.json` (a Normalize module).
    pub normalize: Option<bool>,
    #[serde(default)]
    pub cpu: CpuOptions,
    #[serde(default)]
    pub batching: BatchingConfig,
    /// A remote Open Inference Protocol endpoint serving the same graph ("azure").
    pub remote: Option<RemoteConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Base URL, `http://` or `https://`, e.g. `https://endpoint.example.com` (the host
    /// adds `/v2/models/{model}/infer`).
    pub url: String,
    /// The model name on the remote; default: this model's name.
    pub model: Option<String>,
    /// Environment variable holding the bearer token (never the token itself).
    pub token_env: Option<String>,
    /// PEM file with the CA certificate(s) to trust for an `https://` url, in place of
    /// the system's roots (a private CA, a self-signed endpoint).
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_remote_timeout")]
    pub timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    500
}

fn default_remote_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoutingPolicy {
    /// Batches of at least `threshold` inputs go remote (when it is healthy).
    Threshold,
    /// Pick per batch size from observed latencies, exploring now and then.
    Adaptive,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    pub policy: RoutingPolicy,
    pub threshold: usize,
    /// Consecutive remote failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How often an open breaker probes the remote's readiness.
    pub probe_interval_ms: u64,
    /// Share of batches sent to the provider the adaptive policy does not prefer.
    pub explore: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            policy: RoutingPolicy::Threshold,
            threshold: 4,
            breaker_failures: 2,
            probe_interval_ms: 1000,
            explore: 0.1,
        }
    }
}

fn default_max_inputs() -> usize {
    2048
}

/// Every ONNX Runtime session option the seed tuned. The defaults are the ones that
/// measured fastest on two cores (docs/BENCHMARKS.md): sequential execution with
/// intra-op threads = cores (the seed's parallel mode with two inter-op threads runs
/// at 0.4-0.7× of that), and spinning only while the host is otherwise idle (see
/// [`Spinning`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuOptions {
    pub optimization_level: OptimizationLevel,
    pub execution_mode: ExecutionMode,
    /// 0 = one per available core.
    pub intra_op_threads: usize,
    /// Only used by the parallel execution mode.
    pub inter_op_threads: usize,
    pub memory_arena: bool,
    pub memory_pattern: bool,
    pub spinning: Spinning,
    /// Embedding models: sessions that run batches side by side under load, each on
    /// `intra_op_threads ÷ lanes` threads; 1 = one batch at a time on all threads.
    /// More throughput, worse tail latency: see `providers::cpu::lane_count`.
    pub lanes: usize,
}

/// Whether ORT's worker threads spin-wait for the next operator instead of sleeping.
///
/// Measured on two cores: spinning within a run takes a short MiniLM text from 2.0
/// to 1.3 ms (raw) and one SmolLM2 stream from ~110 to ~148 tokens/s on a quiet
/// machine, but with one core busy elsewhere it costs a third of MiniLM's batch-32
/// throughput (1324 → 884 texts/s) — and on a server the HTTP path and the guests are
/// that elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SpinningSetting")]
pub enum Spinning {
    /// Threads sleep between operators (`false` in the config).
    Off,
    /// ORT's own behaviour: threads spin, also for ~25 ms after each run (`true`).
    Always,
    /// Two sessions of the graph: runs spin (and for 1 ms after they end, bridging a
    /// lone client's gap to its next run) while no other request is in flight and no
    /// other graph runs, and sleep otherwise. Costs
    /// a second copy of the weights. The default.
    WhenIdle,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SpinningSetting {
    Flag(bool),
    Name(String),
}

impl TryFrom<SpinningSetting> for Spinning {
    type Error = String;

    fn try_from(setting: SpinningSetting) -> Result<Self, String> {
        match setting {
            SpinningSetting::Flag(false) => Ok(Spinning::Off),
            SpinningSetting::Flag(true) => Ok(Spinning::Always),
            SpinningSetting::Name(name) => name.parse(),
        }
    }
}

impl std::str::FromStr for Spinning {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "off" | "false" => Ok(Spinning::Off),
            "always" | "true" => Ok(Spinning::Always),
            "when-idle" => Ok(Spinning::WhenIdle),
            other => Err(format!(
                "spinning must be off, always or when-idle (or false / true), not {other:?}"
            )),
        }
    }
}

impl Spinning {
    pub fn name(self) -> &'static str {
        match self {
            Spinning::Off => "off",
            Spinning::Always => "always",
            Spinning::WhenIdle => "when-idle",
        }
    }
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            optimization_level: OptimizationLevel::All,
            execution_mode: ExecutionMode::Sequential,
            intra_op_threads: 0,
            inter_op_threads: 1,
            memory_arena: true,
            memory_pattern: true,
            spinning: Spinning::WhenIdle,
            lanes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    Layout,
    All,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    Sequential,
    Parallel,
}

/// How the embedding queue forms batches from concurrent requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Padded tokens (longest input × inputs) one batch may hold.
    pub max_batch_tokens: usize,
    /// Inputs one batch may hold.
    pub max_batch_inputs: usize,
    /// Inputs waiting in the queue before new requests are refused (busy → 429).
    pub max_queued_inputs: usize,
    /// Decoders: generations queued or running at once before new ones are refused.
    pub max_generations: usize,
    /// Decoders: generations decoded together in one batch (continuous batching);
    /// the others wait for a place.
    pub max_batch_sequences: usize,
    /// Decoders: longer prompts are prefilled in chunks of this many tokens, each
    /// followed by a decode step of the running generations (0 = in one piece).
    pub prefill_chunk_tokens: usize,
    /// Decoders: MiB of recent prompts' KV caches kept for later prompts that start
    /// with the same tokens (0 = none).
    pub prefix_cache_mib: usize,
    /// Decoders: tokens drafted per step by n-gram lookup in the prompt and the
    /// generated text, checked by the step itself (speculative decoding; 0 = off).
    pub speculative_tokens: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16_384,
            max_batch_inputs: 64,
            max_queued_inputs: 16_384,
            max_generations: 64,
            max_batch_sequences: 8,
            prefill_chunk_tokens: 128,
            prefix_cache_mib: 256,
            speculative_tokens: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// A public tenant answers requests that carry no API key.
    #[serde(default)]
    pub public: bool,
    /// Keyless requests go to the public tenant with the longest matching path prefix
    /// (e.g. the console at "/" and the OpenAI router at "/v1"); one or a list.
    #[serde(default)]
    pub path_prefix: crate::tenants::PathPrefixes,
    /// API keys (hashed when loaded; prefer `api_keys_sha256` in files others can read).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// sha256 (hex) of API keys.
    #[serde(default)]
    pub api_keys_sha256: Vec<String>,
    /// The guest component (a `.wasm` file exporting wasi:http/incoming-handler).
    pub component: PathBuf,
    /// Model ids this tenant may use; "*" allows all.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: TenantLimits,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Linear memory one guest instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock limit for a whole request, host calls and streaming included.
    pub request_timeout_ms: u64,
    /// Time a request may spend executing wasm (its CPU budget).
    pub cpu_time_ms: u64,
    /// Requests of this tenant in flight at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Requests per second (bursts up to one second's worth); more get 429. 0 = no limit.
    pub max_requests_per_second: f64,
    /// Request body limit for this tenant (at most the server's).
    pub max_body_bytes: Option<usize>,
    /// Bytes a guest may move through host calls in one request (inputs and results).
    pub max_host_bytes: usize,
    /// Bytes a guest may write as its response body.
    pub max_response_bytes: u64,
    /// Live handles (tensors, graphs, streams) a guest may hold at once.
    pub max_resources: usize,
    /// Whether the guest may make outgoing HTTP requests.
    pub allow_outgoing_http: bool,
    /// Bytes the tenant's key-value store may hold (stored responses); the oldest
    /// entries make room. 0 = no store.
    pub store_bytes: usize,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            request_timeout_ms: 120_000,
            cpu_time_ms: 5_000,
            max_concurrent_requests: 256,
            max_requests_per_second: 0.0,
            max_body_bytes: None,
            max_host_bytes: 32 * 1024 * 1024,
            max_response_bytes: 256 * 1024 * 1024,
            max_resources: 4096,
            allow_outgoing_http: false,
            store_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Where compiled components are cached (by content hash).
    pub cache_dir: PathBuf,
    /// Guest instances that may exist at once across all tenants (pooling allocator).
    pub max_instances: u32,
    /// Largest component the admin API accepts.
    pub max_component_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from(".cache/components"),
            max_instances: 256,
            max_component_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded default, or the given file instead.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Self::parse(DEFAULT_CONFIG).context("embedded default config"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                Self::parse(&text).with_context(|| format!("config {}", path.display()))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for model in &self.models {
            anyhow::ensure!(
                seen.insert(&model.name),
                "model {:?} is configured twice",
                model.name
            );
            anyhow::ensure!(
                model.max_inputs > 0,
                "model {:?}: max_inputs must be > 0",
                model.name
            );
        }
        let mut seen = std::collections::HashSet::new();
        for tenant in &self.tenants {
            anyhow::ensure!(
                seen.insert(&tenant.name),
                "tenant {:?} is configured twice",
                tenant.name
            );
        }
        anyhow::ensure!(!self.tenants.is_empty(), "at least one tenant is needed");
        let budget = self.server.max_buffered_body_bytes;
        anyhow::ensure!(
            budget == 0 || budget >= self.server.max_body_bytes,
            "server.max_buffered_body_bytes ({budget}) must be at least max_body_bytes ({}), or 0 for no budget",
            self.server.max_body_bytes
        );
        crate::server::Cors::parse(&self.server.cors_allow_origins).map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.models[0].name, "all-MiniLM-L6-v2");
        assert_eq!(
            config.models[0].cpu.execution_mode,
            ExecutionMode::Sequential
        );
        assert!(config.tenants[0].public);
    }

    #[test]
    fn spinning_takes_names_and_the_old_booleans() {
        let parse = |value: &str| {
            let text = format!(
                "[[models]]\nname = \"m\"\npath = \"p\"\n[models.cpu]\nspinning = {value}\n[[tenants]]\nname = \"a\"\ncomponent = \"x\"\n"
            );
            Config::parse(&text).map(|c| c.models[0].cpu.spinning)
        };
        assert_eq!(parse("false").unwrap(), Spinning::Off);
        assert_eq!(parse("true").unwrap(), Spinning::Always);
        assert_eq!(parse("\"off\"").unwrap(), Spinning::Off);
        assert_eq!(parse("\"always\"").unwrap(), Spinning::Always);
        assert_eq!(parse("\"when-idle\"").unwrap(), Spinning::WhenIdle);
        assert!(parse("\"sometimes\"").is_err());
        assert_eq!(CpuOptions::default().spinning, Spinning::WhenIdle);
    }

    #[test]
    fn the_body_budget_must_hold_one_largest_body() {
        let parse = |server: &str| {
            Config::parse(&format!(
                "[server]\n{server}\n[[tenants]]\nname = \"a\"\ncomponent = \"x\"\n"
            ))
        };
        let err = parse("max_body_bytes = 1000\nmax_buffered_body_bytes = 999").unwrap_err();
        assert!(
            format!("{err:#}").contains("max_buffered_body_bytes"),
            "{err:#}"
        );
        assert!(parse("max_body_bytes = 1000\nmax_buffered_body_bytes = 1000").is_ok());
        assert!(parse("max_body_bytes = 1000\nmax_buffered_body_bytes = 0").is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n[[tenants]]\nname=\"a\"\ncomponent=\"x\"")
            .unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn duplicate_models_are_rejected() {
        let text = r#"
            [[models]]
            name = "m"
            path = "a"
            [[models]]
            name = "m"
            path = "b"
            [[tenants]]
            name = "t"
            component = "x.wasm"
        "#;
        assert!(Config::parse(text).is_err());
    }
}
