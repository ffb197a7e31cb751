//! nnhost: a sandboxed inference host. The path of a request, by module:
//! `server` (HTTP) → `tenants` (who) → `sandbox` (their guest component, fresh store)
//! → `api` (our WIT imports) → `models` / `scheduler` (batching) → `providers` (ORT).

fn main() -> std::process::ExitCode {
    match nnhost::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nnhost: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
