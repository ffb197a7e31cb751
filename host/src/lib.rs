//! nnhost: a sandboxed inference host. The path of a request, by module:
//! `server` (HTTP) → `tenants` (who) → `sandbox` (their guest component, fresh store)
//! → `api` (our WIT imports) → `models` / `scheduler` (batching) → `providers` (ORT).
//!
//! A library so that fuzz targets (`host/fuzz`) and other tools can call the pure
//! parts (`tensor`, `oip`, `config`); the `nnhost` binary is `main.rs` over
//! [`cli::run`].

// The modules were private to a binary before; exporting them makes clippy's
// public-API lints apply (`TensorData::len` without `is_empty`).
#![allow(clippy::len_without_is_empty)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod cpu_priority;
pub mod error;
pub mod metrics;
pub mod models;
pub mod oip;
pub mod providers;
pub mod sandbox;
pub mod scheduler;
pub mod server;
pub mod tenants;
pub mod tensor;
