//! The "azure" provider: remote inference over the Open Inference Protocol
//! (KServe v2 / Triton) — what ONNX Runtime's Azure execution provider does through
//! its AzureTritonInvoker op, done natively for any graph: the same tokenized tensors
//! go to `POST /v2/models/{model}/infer` with a bearer token, with connect and
//! request timeouts (the EP has none) and a readiness probe.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{NamedTensors, Provider, ProviderError};
use crate::config::RemoteConfig;
use crate::oip;

pub struct RemoteProvider {
    name: String,
    base: String,
    model: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Its own small runtime: providers are called from blocking worker threads.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Replies larger than this are refused (a broken or hostile remote).
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

impl RemoteProvider {
    pub fn new(config: &RemoteConfig, local_model: &str) -> Result<Self> {
        let base = config.url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://"),
            "remote url {base:?}: only http:// endpoints are supported"
        );
        let token = match &config.token_env {
            Some(var) => match std::env::var(var) {
                Ok(token) if !token.is_empty() => Some(token),
                _ => {
                    tracing::warn!(variable = %var, "the remote provider's token variable is not set; sending no Authorization header");
                    None
                }
            },
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("remote-provider")
            .enable_all()
            .build()
            .context("remote provider runtime")?;
        Ok(Self {
            name: "azure".into(),
            base,
            model: config
                .model
                .clone()
                .unwrap_or_else(|| local_model.to_string()),
            token,
            timeout: Duration::from_millis(config.timeout_ms),
            client,
            runtime: Some(runtime),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("{}/v2/models/{}", self.base, self.model)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .block_on(f)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the reply: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(format!("no reply within {:?}", self.timeout)),
        }
    }

    fn request(
        &self,
        method: &str,
        uri: String,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// Readiness: server ready and the model ready.
    pub fn probe(&self) -> Result<(), String> {
        self.block_on(async {
            for uri in [
                format!("{}/v2/health/ready", self.base),
                format!("{}/ready", self.endpoint()),
            ] {
                let (status, _) = self
                    .send(self.request("GET", uri.clone(), Bytes::new())?)
                    .await?;
                if status != 200 {
                    return Err(format!("{uri} answered {status}"));
                }
            }
            Ok(())
        })
    }
}

impl Provider for RemoteProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, ProviderError> {
        let request = oip::InferRequest {
            id: None,
            inputs: inputs
                .iter()
                .map(|(name, t)| oip::from_tensor(name, t))
                .collect(),
            outputs: None,
            parameters: None,
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| ProviderError::Backend(e.to_string()))?;
        let reply = self.block_on(async {
            let http = self.request("POST", format!("{}/infer", self.endpoint()), body.into())?;
            self.send(http).await
        });
        let (status, body) = reply.map_err(ProviderError::Backend)?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(ProviderError::Backend(format!(
                "remote answered {status}: {text}"
            )));
        }
        let reply: oip::InferResponse = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Backend(format!("malformed reply: {e}")))?;
        reply
            .outputs
            .iter()
            .map(|t| {
                Ok((
                    t.name.clone(),
                    oip::to_tensor(t)
                        .map_err(|e| ProviderError::Backend(format!("malformed reply: {e}")))?,
                ))
            })
            .collect()
    }
}

impl Drop for RemoteProvider {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; let it go quietly.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
