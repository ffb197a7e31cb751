//! Command line: `nnhost serve` (the default) and friends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::models::Registry;
use crate::providers::ort_env;
use crate::sandbox::Sandbox;
use crate::server::{self, AppState};
use crate::tenants::Tenants;

#[derive(Parser)]
#[command(
    name = "nnhost",
    version,
    about = "Sandboxed inference host: WebAssembly guests over ONNX Runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured models and tenants over HTTP.
    Serve(ServeArgs),
    /// Deploy a guest component to a running host (admin API), creating the tenant if needed.
    Deploy(DeployArgs),
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Measure: raw ONNX Runtime runs (`bench ort`) or HTTP load (`bench http`).
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(clap::Args)]
struct DeployArgs {
    /// The tenant to deploy to.
    #[arg(long)]
    tenant: String,
    /// The host's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token.
    #[arg(long, env = "NNHOST_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The component (.wasm) to deploy.
    file: PathBuf,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Address to listen on (overrides the config's server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML configuration file; without it the embedded default is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Deploy(args) => deploy(args),
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Bench(command) => crate::bench::run(command),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,ort=warn,wasmtime=warn,cranelift=warn")
    });
    use std::io::IsTerminal;
    // Colours for a terminal only: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    init_logging(&args.log_format);
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let library = ort_env::init(&config.onnxruntime.library)?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let registry = {
        let _in_runtime = runtime.enter();
        Arc::new(Registry::load(&config.models)?)
    };
    let served = runtime.block_on({
        let registry = registry.clone();
        async move {
            let max_memory = config
                .tenants
                .iter()
                .map(|t| t.limits.memory_bytes)
                .max()
                .unwrap_or(0);
            let sandbox = Sandbox::new(&config.sandbox, max_memory)?;
            let tenants = Arc::new(Tenants::load(
                &config.tenants,
                sandbox.clone(),
                registry.clone(),
            )?);
            let admin_token = admin_token(&config.admin)?;
            let listen = config.server.listen;
            let cors = server::Cors::parse(&config.server.cors_allow_origins)
                .map_err(anyhow::Error::msg)?;
            let body_budget = server::BodyBudget::new(config.server.max_buffered_body_bytes);
            let state = Arc::new(AppState {
                cors,
                body_budget,
                config,
                registry,
                tenants,
                admin_token,
                started: std::time::Instant::now(),
            });
            server::serve(state, listen).await.context("serving")
        }
    });
    // Past the grace period. Generations still running end with "the server is
    // shutting down" while their guests can still say so; then the guests are dropped
    // and, last, the background ones, so that no graph runs as ONNX Runtime is torn
    // down at exit (it failed with "GetElementType is not implemented").
    registry.stop_workers();
    drop(runtime);
    crate::sandbox::shut_down_background(std::time::Duration::from_secs(5));
    served
}

/// The admin token's digest: from `admin.token_sha256`, else from the variable it names.
fn admin_token(
    config: &crate::config::AdminConfig,
) -> Result<Option<crate::tenants::keys::KeyHash>> {
    use crate::tenants::keys;
    if let Some(digest) = &config.token_sha256 {
        return keys::parse_hex(digest)
            .map(Some)
            .map_err(anyhow::Error::msg);
    }
    Ok(std::env::var(&config.token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .map(|t| keys::hash(&t)))
}

fn deploy(args: DeployArgs) -> Result<()> {
    use http_body_util::{BodyExt, Full};
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let uri = format!(
        "{}/admin/tenants/{}/component",
        args.url.trim_end_matches('/'),
        args.tenant
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let request = hyper::Request::put(&uri)
            .header("authorization", format!("Bearer {}", args.token))
            .header("content-type", "application/wasm")
            .body(Full::new(bytes::Bytes::from(wasm)))?;
        let response = client
            .request(request)
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    })?;
    let text = String::from_utf8_lossy(&body);
    anyhow::ensure!(status.is_success(), "deploy failed ({status}): {text}");
    println!("{text}");
    Ok(())
}
