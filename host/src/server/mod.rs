//! The HTTP front door: accept connections, answer the host's own endpoints, hand
//! everything else to the calling tenant's guest.

mod admin;
mod responses;
mod routes;
mod v2;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::models::Registry;
use crate::sandbox::Sandbox;
use crate::tenants::Tenants;

pub struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub sandbox: Arc<Sandbox>,
    pub tenants: Arc<Tenants>,
    /// sha256 of the admin token; None disables the admin API.
    pub admin_token: Option<crate::tenants::keys::KeyHash>,
    pub started: std::time::Instant,
}

pub async fn serve(state: Arc<AppState>, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "nnhost is serving");
    println!("nnhost listening on http://{local}");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| routes::handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
