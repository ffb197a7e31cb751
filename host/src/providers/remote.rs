//! The "azure" provider: remote inference over the Open Inference Protocol
//! (KServe v2 / Triton) — what ONNX Runtime's Azure execution provider does through
//! its AzureTritonInvoker op, done natively for any graph: the same tokenized tensors
//! go to `POST /v2/models/{model}/infer` with a bearer token, with connect and
//! request timeouts (the EP has none) and a readiness probe. `https://` endpoints
//! (Azure ML, KServe ingresses) go through rustls with the system's roots or the CA
//! certificates of `ca_file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::{NamedTensors, Provider, ProviderError};
use crate::config::RemoteConfig;
use crate::oip;

pub struct RemoteProvider {
    name: String,
    base: String,
    model: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Its own small runtime: providers are called from blocking worker threads.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Replies larger than this are refused (a broken or hostile remote).
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

impl RemoteProvider {
    pub fn new(config: &RemoteConfig, local_model: &str) -> Result<Self> {
        let base = config.url.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        anyhow::ensure!(
            https || base.starts_with("http://"),
            "remote url {base:?}: only http:// and https:// endpoints are supported"
        );
        if let (false, Some(ca_file)) = (https, &config.ca_file) {
            anyhow::bail!(
                "remote url {base:?}: ca_file {} is set but the url is not https://",
                ca_file.display()
            );
        }
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
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        tcp.set_nodelay(true);
        // The TLS layer wraps it and needs it to accept https:// URIs too.
        tcp.enforce_http(false);
        let tls = if https {
            tls_config(config.ca_file.as_deref())?
        } else {
            // Never used (the base URL is http://); no roots to load.
            client_config(RootCertStore::empty())?
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
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
                .map_err(|e| format!("connection: {}", error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the reply: {}", error_chain(&*e)))?
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

/// rustls with the ring provider, trusting the CA certificates of `ca_file` when it is
/// set, else the system's roots (Mozilla's bundle when the system has none).
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("remote ca_file {}: cannot read it", path.display()))?;
            for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let cert = cert.map_err(|e| {
                    anyhow::anyhow!("remote ca_file {}: bad PEM: {e}", path.display())
                })?;
                roots.add(cert).with_context(|| {
                    format!(
                        "remote ca_file {}: certificate {} is not a usable CA certificate",
                        path.display(),
                        i + 1
                    )
                })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "remote ca_file {}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
                path.display()
            );
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(
                added,
                ignored,
                "system CA certificates for the remote provider"
            );
            if roots.is_empty() {
                tracing::warn!("no CA certificates found on the system; the remote provider trusts Mozilla's roots (webpki-roots)");
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    client_config(roots)
}

fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// An error and its sources: hyper's own message alone ("client error (Connect)") hides
/// the cause (refused, TLS certificate, timeout).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, ca_file: Option<&Path>) -> RemoteConfig {
        RemoteConfig {
            url: url.into(),
            model: None,
            token_env: None,
            ca_file: ca_file.map(Path::to_path_buf),
            connect_timeout_ms: 100,
            timeout_ms: 1000,
        }
    }

    fn error(url: &str, ca_file: Option<&Path>) -> String {
        match RemoteProvider::new(&config(url, ca_file), "m") {
            Ok(_) => panic!("{url} with {ca_file:?} was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn http_and_https_urls_are_accepted() {
        let http = RemoteProvider::new(&config("http://127.0.0.1:1/", None), "m").unwrap();
        assert_eq!(http.endpoint(), "http://127.0.0.1:1/v2/models/m");
        let https = RemoteProvider::new(&config("https://example.com", None), "m").unwrap();
        assert_eq!(https.endpoint(), "https://example.com/v2/models/m");
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(error("ftp://example.com", None).contains("http:// and https://"));
        assert!(error("example.com:8000", None).contains("http:// and https://"));
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = error("https://example.com", Some(&missing));
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = error("https://example.com", Some(&empty));
        assert!(e.contains("no certificate in it"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = error("https://example.com", Some(&garbage));
        assert!(
            e.contains("garbage.pem") && e.contains("not a usable CA certificate"),
            "{e}"
        );

        let e = error("http://example.com", Some(&garbage));
        assert!(e.contains("not https://"), "{e}");
    }
}
