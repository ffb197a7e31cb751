//! Running untrusted guest components: one engine for the process, one compiled and
//! pre-instantiated component per tenant, and a fresh store with limits for every
//! request (the `wasmtime serve` pattern).

mod cache;
mod cpu_time;
mod engine;
mod limited_body;
mod request;
mod runtime;
mod state;
mod ticker;

pub use engine::Sandbox;
pub use request::{handle as handle_request, RequestLimits};
pub use runtime::shut_down_background;
pub use state::GuestState;
pub use ticker::Waiting as WaitingForInference;
