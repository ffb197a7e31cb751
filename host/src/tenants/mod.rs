//! Tenants: who is calling (API key → tenant), which guest component answers them,
//! which models they may use and with what limits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::api::ModelAccess;
use crate::config::TenantConfig;
use crate::models::Registry;
use crate::sandbox::{GuestState, RequestLimits, Sandbox};

pub struct Tenant {
    pub name: String,
    pub public: bool,
    pub access: ModelAccess,
    pub limits: RequestLimits,
    pub guest: ProxyPre<GuestState>,
}

impl Tenant {
    pub fn load(config: &TenantConfig, sandbox: &Sandbox, registry: Arc<Registry>) -> Result<Self> {
        let guest = sandbox.prepare_file(&config.component).with_context(|| format!("tenant {:?}", config.name))?;
        for model in &config.models {
            if model != "*" && registry.get(model).is_none() {
                tracing::warn!(tenant = %config.name, %model, "allowed model is not configured");
            }
        }
        Ok(Self {
            name: config.name.clone(),
            public: config.public,
            access: ModelAccess::new(registry, &config.models, &config.name),
            limits: RequestLimits {
                memory_bytes: config.limits.memory_bytes,
                timeout: Duration::from_millis(config.limits.request_timeout_ms),
                cpu_time: Duration::from_millis(config.limits.cpu_time_ms),
            },
            guest,
        })
    }

    /// Fresh per-request state for this tenant's guest.
    pub fn new_state(&self) -> GuestState {
        GuestState::new(self.access.clone(), &self.limits)
    }
}

pub struct Tenants {
    tenants: Vec<Arc<Tenant>>,
}

impl Tenants {
    pub fn load(configs: &[TenantConfig], sandbox: &Sandbox, registry: Arc<Registry>) -> Result<Self> {
        let tenants = configs
            .iter()
            .map(|c| Tenant::load(c, sandbox, registry.clone()).map(Arc::new))
            .collect::<Result<_>>()?;
        Ok(Self { tenants })
    }

    pub fn names(&self) -> Vec<String> {
        self.tenants.iter().map(|t| t.name.clone()).collect()
    }

    /// The tenant a request belongs to: for now the public one.
    pub fn public(&self) -> Option<Arc<Tenant>> {
        self.tenants.iter().find(|t| t.public).cloned()
    }
}
