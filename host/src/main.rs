//! nnhost: a sandboxed inference host. The path of a request, by module:
//! `server` (HTTP) → `tenants` (who) → `sandbox` (their guest component, fresh store)
//! → `api` (our WIT imports) → `models` / `scheduler` (batching) → `providers` (ORT).

mod api;
mod bench;
mod cli;
mod config;
mod error;
mod metrics;
mod models;
mod oip;
mod providers;
mod sandbox;
mod scheduler;
mod server;
mod tenants;
mod tensor;

fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nnhost: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
