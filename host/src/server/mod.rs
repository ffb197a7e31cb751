//! The HTTP front door: accept connections, answer the host's own endpoints, hand
//! everything else to the calling tenant's guest.

mod admin;
mod body;
mod connections;
mod content_encoding;
mod cors;
mod request_id;
mod responses;
mod routes;
mod v2;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::models::Registry;
use crate::tenants::Tenants;

pub use body::BodyBudget;
pub use cors::Cors;

pub struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub tenants: Arc<Tenants>,
    /// sha256 of the admin token; None disables the admin API.
    pub admin_token: Option<crate::tenants::keys::KeyHash>,
    /// From `[server] cors_allow_origins`.
    pub cors: Cors,
    /// From `[server] max_buffered_body_bytes`.
    pub body_budget: BodyBudget,
    pub started: std::time::Instant,
}

pub async fn serve(state: Arc<AppState>, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "nnhost is serving");
    if state.admin_token.is_none()
        && !state.config.server.public_metrics
        && state.tenants.all().iter().any(|t| t.has_keys())
    {
        tracing::warn!("tenants have API keys but no admin token is set: /metrics answers 401 and /status shows each caller its own tenant; set NNHOST_ADMIN_TOKEN for the operator's view");
    }
    let slots = connections::Slots::for_limit(state.config.server.max_connections);
    let mut last_exhaustion_warning: Option<std::time::Instant> = None;
    println!("nnhost listening on http://{local}");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (closing, closing_watch) = tokio::sync::watch::channel(false);
    let idle_timeout = match state.config.server.header_read_timeout_ms {
        0 => None,
        ms => Some(std::time::Duration::from_millis(ms)),
    };
    loop {
        // A slot first: at the limit, new clients wait in the listen backlog.
        let slot = tokio::select! {
            slot = slots.take() => slot,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if connections::is_resource_exhaustion(&e) => {
                    if last_exhaustion_warning.is_none_or(|at| at.elapsed().as_secs() >= 10) {
                        last_exhaustion_warning = Some(std::time::Instant::now());
                        tracing::warn!(error = %e, "accept failed: out of resources; pausing 100 ms per try (logged every 10 s)");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let activity = connections::Activity::new();
        let service = service_fn({
            let activity = activity.clone();
            move |req| connections::tracked(activity.clone(), routes::handle(state.clone(), req))
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle_timeout);
        // Pings drop HTTP/2 peers that vanished; idle ones are closed by `connections`.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let closing = closing_watch.clone();
        tokio::spawn(async move {
            let served = connections::serve(
                connection,
                |connection| connection.graceful_shutdown(),
                activity,
                idle_timeout,
                closing,
                slot,
            );
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // New connections are refused from here on (the listener is closed); requests in
    // flight finish, idle keep-alive connections are closed, within the grace period.
    drop(listener);
    let grace = std::time::Duration::from_millis(state.config.server.shutdown_grace_ms);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing requests in flight"
    );
    let _ = closing.send(true);
    match tokio::time::timeout(grace, slots.all_free()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
