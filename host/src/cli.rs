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
#[command(name = "nnhost", version, about = "Sandboxed inference host: WebAssembly guests over ONNX Runtime")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured models and tenants over HTTP.
    Serve(ServeArgs),
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Measure: raw ONNX Runtime runs (`bench ort`) or HTTP load (`bench http`).
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
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
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Bench(command) => crate::bench::run(command),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let registry = Arc::new(Registry::load(&config.models)?);
        let max_memory = config.tenants.iter().map(|t| t.limits.memory_bytes).max().unwrap_or(0);
        let sandbox = Sandbox::new(&config.sandbox, max_memory)?;
        let tenants = Tenants::load(&config.tenants, &sandbox, registry.clone())?;
        let listen = config.server.listen;
        let state = Arc::new(AppState { config, registry, sandbox, tenants, started: std::time::Instant::now() });
        server::serve(state, listen).await.context("serving")
    })
}
