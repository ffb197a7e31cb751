//! Prometheus metrics (text format 0.0.4 at `/metrics`). One registry per process;
//! label sets stay small and bounded: routes are normalised, tenants and models
//! come from the config, providers from the code.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub http_connections: IntGaugeVec,
    pub provider_runs: IntCounterVec,
    pub provider_latency: HistogramVec,
    pub batch_size: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub inputs_dropped: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub breaker_open: IntGaugeVec,
    pub tokens: IntCounterVec,
    pub generations: IntCounterVec,
    pub generations_running: IntGaugeVec,
    pub generations_waiting: IntGaugeVec,
    pub time_to_first_token: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub prefix_cache_tokens: IntCounterVec,
    pub prefill_prompts: HistogramVec,
    pub speculative_tokens: IntCounterVec,
    pub guest_failures: IntCounterVec,
    pub guest_instantiate: HistogramVec,
    pub guests_background: IntCounterVec,
    /// Set when `/metrics` is scraped.
    pub tenant_store_bytes: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registration");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registration");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registration");
    g
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = Registry::new_custom(Some("nnhost".into()), None).expect("registry");
        let seconds = exponential_buckets(0.0005, 2.0, 18).expect("buckets");
        Metrics {
            http_requests: counter(
                &r,
                "http_requests_total",
                "HTTP requests by route, tenant and status",
                &["route", "tenant", "status"],
            ),
            http_latency: histogram(
                &r,
                "http_request_duration_seconds",
                "Time to the response head, by route and tenant",
                &["route", "tenant"],
                seconds.clone(),
            ),
            http_connections: gauge(&r, "http_connections", "HTTP connections open", &[]),
            provider_runs: counter(
                &r,
                "provider_runs_total",
                "Graph runs by provider, model and outcome",
                &["provider", "model", "outcome"],
            ),
            provider_latency: histogram(
                &r,
                "provider_run_duration_seconds",
                "Graph run latency by provider and model",
                &["provider", "model"],
                seconds.clone(),
            ),
            batch_size: histogram(
                &r,
                "batch_size",
                "Inputs per graph run: texts per embedding batch, rows per decode step",
                &["model", "provider"],
                exponential_buckets(1.0, 2.0, 9).expect("buckets"),
            ),
            queue_depth: gauge(
                &r,
                "queue_depth",
                "Inputs waiting in a model's queue",
                &["model"],
            ),
            fallbacks: counter(
                &r,
                "fallbacks_total",
                "Batches retried on the local CPU after the remote provider failed",
                &["model", "reason"],
            ),
            breaker_open: gauge(
                &r,
                "breaker_open",
                "1 while a provider's circuit breaker keeps it out",
                &["provider"],
            ),
            tokens: counter(
                &r,
                "tokens_total",
                "Tokens processed by tenant, model and kind (prompt or completion)",
                &["tenant", "model", "kind"],
            ),
            inputs_dropped: counter(
                &r,
                "embedding_inputs_dropped_total",
                "Queued embedding inputs dropped unrun because their client went away",
                &["model"],
            ),
            generations: counter(
                &r,
                "generations_total",
                "Finished generations by model and finish reason",
                &["model", "finish_reason"],
            ),
            generations_running: gauge(
                &r,
                "generations_running",
                "Generations in a model's decode batch or being prefilled",
                &["model"],
            ),
            generations_waiting: gauge(
                &r,
                "generations_waiting",
                "Generations queued for a place in a model's decode batch",
                &["model"],
            ),
            time_to_first_token: histogram(
                &r,
                "time_to_first_token_seconds",
                "From a generation's submission to its first token (queue, prefill, sampling)",
                &["model"],
                seconds.clone(),
            ),
            time_per_output_token: histogram(
                &r,
                "time_per_output_token_seconds",
                "Between two tokens of one generation",
                &["model"],
                exponential_buckets(0.001, 1.5, 20).expect("buckets"),
            ),
            prefix_cache_tokens: counter(
                &r,
                "prefix_cache_tokens_total",
                "Prompt tokens of generations by model: reused from the prefix cache or prefilled",
                &["model", "outcome"],
            ),
            prefill_prompts: histogram(
                &r,
                "prefill_prompts",
                "Prompts per prefill run of a chat model (a chunk of a long prompt counts one)",
                &["model"],
                exponential_buckets(1.0, 2.0, 9).expect("buckets"),
            ),
            speculative_tokens: counter(
                &r,
                "speculative_tokens_total",
                "Tokens drafted by n-gram lookup for a decode step to check, and those its samples confirmed",
                &["model", "outcome"],
            ),
            guest_failures: counter(
                &r,
                "guest_failures_total",
                "Guest requests that ended without a response, by tenant and reason",
                &["tenant", "reason"],
            ),
            guest_instantiate: histogram(
                &r,
                "guest_instantiate_seconds",
                "Instantiating a tenant's guest in its fresh store, per request",
                &["tenant"],
                exponential_buckets(0.00001, 2.0, 16).expect("buckets"),
            ),
            guests_background: counter(
                &r,
                "guests_background_total",
                "Guest requests moved to the background threads, by tenant and reason: `cpu` (computed past its burst) or `probation` (its tenant's guest misbehaves)",
                &["tenant", "reason"],
            ),
            tenant_store_bytes: gauge(
                &r,
                "tenant_store_bytes",
                "Bytes held in each tenant's key-value store (stored responses)",
                &["tenant"],
            ),
            registry: r,
        }
    })
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A bounded route label from a request path.
pub fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/v1/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/conversations",
        "/v1/models",
        "/v1/tokenize",
        "/v1/detokenize",
        "/v1/rerank",
        "/v1/score",
        "/tokenize",
        "/detokenize",
        "/rerank",
        "/score",
        "/v2/rerank",
        "/v2/health",
        "/v2/models",
        "/v2",
        "/health",
        "/ready",
        "/metrics",
        "/status",
        "/admin",
    ];
    ROUTES
        .iter()
        .find(|r| path == **r || path.starts_with(&format!("{r}/")))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_bounded() {
        assert_eq!(route_label("/v1/models/abc"), "/v1/models");
        assert_eq!(route_label("/v1/responses"), "/v1/responses");
        assert_eq!(
            route_label("/v1/conversations/c/items"),
            "/v1/conversations"
        );
        assert_eq!(route_label("/v2/models/m/infer"), "/v2/models");
        assert_eq!(route_label("/v1/embeddingsX"), "other");
        assert_eq!(route_label("/random/path"), "other");
    }

    #[test]
    fn renders_prometheus_text() {
        metrics()
            .http_requests
            .with_label_values(&["/health", "-", "200"])
            .inc();
        let text = metrics().render();
        assert!(
            text.contains("# TYPE nnhost_http_requests_total counter"),
            "{text}"
        );
    }
}
