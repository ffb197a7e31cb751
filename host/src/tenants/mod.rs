//! Tenants: who is calling (API key → tenant), which guest component answers them,
//! which models they may use and with what limits. Tenants and their components can
//! be added, replaced and removed while the host runs: a request holds the `Arc` of
//! the tenant it started with, so in-flight requests finish on the old component.

pub mod conduct;
pub mod keys;
pub mod path_prefixes;
pub mod rate_limit;
pub mod store;
pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::RwLock;
use serde::Deserialize;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::api::ModelAccess;
use crate::config::{TenantConfig, TenantLimits};
use crate::models::Registry;
use crate::sandbox::{GuestState, RequestLimits, Sandbox};
use keys::KeyHash;
pub use path_prefixes::PathPrefixes;
use usage::Usage;

pub struct Tenant {
    pub name: String,
    pub public: bool,
    pub access: ModelAccess,
    pub settings: TenantSettings,
    pub limits: RequestLimits,
    pub guest: ProxyPre<GuestState>,
    /// sha256 of the component, as deployed.
    pub component_sha256: String,
    pub concurrency: Arc<Semaphore>,
    /// Requests per second, when the tenant's limits set one.
    pub rate: Option<rate_limit::RateLimit>,
    pub usage: Arc<Usage>,
    /// What its guests keep between requests (kept across redeploys, like `usage`).
    pub store: Arc<store::KvStore>,
    key_hashes: Vec<KeyHash>,
}

/// Everything about a tenant but its component: what the admin API takes as JSON.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    pub public: bool,
    pub path_prefix: PathPrefixes,
    #[serde(skip_serializing)]
    pub api_keys: Vec<String>,
    pub api_keys_sha256: Vec<String>,
    pub models: Vec<String>,
    pub limits: TenantLimits,
}

impl TenantSettings {
    pub fn from_config(config: &TenantConfig) -> Self {
        Self {
            public: config.public,
            path_prefix: config.path_prefix.clone(),
            api_keys: config.api_keys.clone(),
            api_keys_sha256: config.api_keys_sha256.clone(),
            models: config.models.clone(),
            limits: config.limits.clone(),
        }
    }

    fn key_hashes(&self) -> Result<Vec<KeyHash>> {
        let mut hashes: Vec<KeyHash> = self.api_keys.iter().map(|k| keys::hash(k)).collect();
        for hex_digest in &self.api_keys_sha256 {
            hashes.push(keys::parse_hex(hex_digest).map_err(anyhow::Error::msg)?);
        }
        Ok(hashes)
    }
}

pub enum AuthError {
    Missing,
    Invalid,
}

impl Tenant {
    fn build(
        name: &str,
        mut settings: TenantSettings,
        guest: ProxyPre<GuestState>,
        component_sha256: String,
        registry: Arc<Registry>,
        usage: Arc<Usage>,
        store: Arc<store::KvStore>,
    ) -> Result<Self> {
        let key_hashes = settings.key_hashes()?;
        // Plain keys are not kept: from here on only their digests exist.
        settings.api_keys_sha256 = key_hashes.iter().map(hex::encode).collect();
        settings.api_keys.clear();
        for model in &settings.models {
            if model != "*" && registry.get(model).is_none() {
                tracing::warn!(tenant = %name, %model, "allowed model is not configured");
            }
        }
        let l = &settings.limits;
        let limits = RequestLimits {
            memory_bytes: l.memory_bytes,
            timeout: Duration::from_millis(l.request_timeout_ms),
            cpu_time: Duration::from_millis(l.cpu_time_ms),
            max_host_bytes: l.max_host_bytes,
            max_response_bytes: l.max_response_bytes,
            max_resources: l.max_resources,
            allow_outgoing_http: l.allow_outgoing_http,
        };
        Ok(Self {
            name: name.to_string(),
            public: settings.public,
            access: ModelAccess::new(registry, &settings.models, name, usage.clone())
                .with_store(store.clone(), l.store_bytes),
            concurrency: Arc::new(Semaphore::new(l.max_concurrent_requests.max(1))),
            rate: rate_limit::RateLimit::new(l.max_requests_per_second),
            settings,
            limits,
            guest,
            component_sha256,
            usage,
            store,
            key_hashes,
        })
    }

    /// Fresh per-request state for this tenant's guest.
    pub fn new_state(&self) -> GuestState {
        let on_probation = self.on_probation();
        self.usage.conduct.request();
        GuestState::new(self.access.clone(), &self.limits, on_probation)
    }

    /// A tenant on probation starts its requests in the background: they run only
    /// while no other work is in flight. It is on probation while its guest misbehaves
    /// (traps, runs out of time, memory or CPU) in at least half of its requests of the
    /// last 1–2 s: a hostile guest's first request gets its short foreground burst, the
    /// ones after it cannot take CPU from well-behaved tenants even for that long, and
    /// a busy tenant's rare failure does not slow its other requests. Public tenants are
    /// exempt: their guest is the operator's, their callers anonymous, and one caller's
    /// bad requests must not slow every other caller.
    fn on_probation(&self) -> bool {
        !self.public && self.usage.conduct.misbehaving()
    }

    /// Whether callers need a key to be this tenant.
    pub fn has_keys(&self) -> bool {
        !self.key_hashes.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "public": self.public,
            "models": self.settings.models,
            "limits": self.settings.limits,
            "api_keys": self.key_hashes.len(),
            "component_sha256": self.component_sha256,
            "in_flight": self.settings.limits.max_concurrent_requests.max(1) - self.concurrency.available_permits(),
            "usage": self.usage.to_json(),
            "store": {"entries": self.store.size().0, "bytes": self.store.size().1},
            // Its guest misbehaves in most recent requests: they run in the background.
            "on_probation": self.on_probation(),
        })
    }
}

pub struct Tenants {
    sandbox: Arc<Sandbox>,
    registry: Arc<Registry>,
    tenants: RwLock<BTreeMap<String, Arc<Tenant>>>,
}

impl Tenants {
    pub fn load(
        configs: &[TenantConfig],
        sandbox: Arc<Sandbox>,
        registry: Arc<Registry>,
    ) -> Result<Self> {
        let this = Self {
            sandbox,
            registry,
            tenants: RwLock::new(BTreeMap::new()),
        };
        for config in configs {
            let bytes = std::fs::read(&config.component).with_context(|| {
                format!(
                    "tenant {:?}: reading guest component {} (run `just guests` to build it)",
                    config.name,
                    config.component.display()
                )
            })?;
            this.deploy(
                &config.name,
                Some(TenantSettings::from_config(config)),
                Some(&bytes),
            )
            .with_context(|| format!("tenant {:?}", config.name))?;
        }
        Ok(this)
    }

    /// Adds or replaces a tenant. `settings` None keeps the current ones; `component`
    /// None keeps the current component. Validation and compilation happen before the
    /// swap, so a bad component never replaces a good one.
    pub fn deploy(
        &self,
        name: &str,
        settings: Option<TenantSettings>,
        component: Option<&[u8]>,
    ) -> Result<Arc<Tenant>> {
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "tenant names are 1-64 characters of letters, digits, '-' and '_'"
        );
        let current = self.get(name);
        let (guest, sha) = match component {
            Some(bytes) => (
                self.sandbox.prepare_bytes(bytes)?,
                hex::encode(sha2::Sha256::digest(bytes)),
            ),
            None => match &current {
                Some(t) => (t.guest.clone(), t.component_sha256.clone()),
                None => {
                    anyhow::bail!("tenant {name:?} does not exist: deploy a component to create it")
                }
            },
        };
        let settings = match (settings, &current) {
            (Some(s), _) => s,
            (None, Some(t)) => t.settings.clone(),
            (None, None) => TenantSettings {
                models: vec!["*".into()],
                path_prefix: PathPrefixes::root(),
                ..Default::default()
            },
        };
        let usage = current
            .as_ref()
            .map(|t| t.usage.clone())
            .unwrap_or_default();
        let store = current
            .as_ref()
            .map(|t| t.store.clone())
            .unwrap_or_default();
        let tenant = Arc::new(Tenant::build(
            name,
            settings,
            guest,
            sha,
            self.registry.clone(),
            usage,
            store,
        )?);
        self.tenants
            .write()
            .insert(name.to_string(), tenant.clone());
        tracing::info!(tenant = %name, component_sha256 = %tenant.component_sha256, "tenant deployed");
        Ok(tenant)
    }

    pub fn remove(&self, name: &str) -> bool {
        self.tenants.write().remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.tenants.read().values().cloned().collect()
    }

    /// The tenant a request belongs to: the one whose key it carries; otherwise the
    /// public tenant for the path. OpenAI clients always send some key (`api_key` is
    /// mandatory in the SDKs), so on a host with a public tenant an unknown key is
    /// served as public; without one it is a 401. Every key is compared.
    pub fn authenticate(&self, key: Option<&str>, path: &str) -> Result<Arc<Tenant>, AuthError> {
        let tenants = self.tenants.read();
        if let Some(key) = key {
            let digest = keys::hash(key);
            let mut found = None;
            for tenant in tenants.values() {
                for candidate in &tenant.key_hashes {
                    if keys::constant_time_eq(candidate, &digest) && found.is_none() {
                        found = Some(tenant.clone());
                    }
                }
            }
            if let Some(tenant) = found {
                return Ok(tenant);
            }
        }
        let public = tenants
            .values()
            .filter(|t| t.public)
            .filter_map(|t| Some((t.settings.path_prefix.longest_match(path)?, t)))
            .max_by_key(|(matched, _)| *matched)
            .map(|(_, t)| t.clone());
        match (public, key) {
            (Some(tenant), _) => Ok(tenant),
            (None, Some(_)) => Err(AuthError::Invalid),
            (None, None) => Err(AuthError::Missing),
        }
    }
}

use sha2::Digest as _;
