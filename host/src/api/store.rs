//! `nnhost:inference/store`: the calling tenant's key-value store
//! ([`crate::tenants::store`]). Values count against the request's host-call bytes.

use super::nnhost::inference::store::{Host, Versioned};
use super::{ApiState, WitError};
use crate::error::{ErrorCode, InferenceError};
use crate::tenants::store::StoreError;

impl From<StoreError> for InferenceError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::Disabled => ErrorCode::Unsupported,
            StoreError::BadKey => ErrorCode::InvalidArgument,
            StoreError::TooLarge { .. } => ErrorCode::ResourceExhausted,
        };
        InferenceError::new(code, e.to_string())
    }
}

impl ApiState {
    /// Past the request's budget the request ends (a trap): reads have no error to
    /// report it with, and answering "absent" would be a lie.
    fn charge_read(&mut self, key: &str, size: usize) -> wasmtime::Result<()> {
        self.charge(size).map_err(|_| {
            wasmtime::Error::msg(format!(
                "the store value under {key:?} ({size} bytes) exceeds this request's host-call budget"
            ))
        })
    }
}

impl Host for ApiState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let value = self.access.store.get(&key);
        self.charge_read(&key, value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        if let Err(e) = self.charge(value.len()) {
            return Ok(Err(e.into()));
        }
        let limit = self.access.store_bytes;
        Ok(self
            .access
            .store
            .set(&key, value, limit)
            .map_err(|e| InferenceError::from(e).into()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.access.store.delete(&key))
    }

    async fn get_versioned(&mut self, key: String) -> wasmtime::Result<Option<Versioned>> {
        let found = self.access.store.get_versioned(&key);
        self.charge_read(&key, found.as_ref().map_or(0, |(_, v)| v.len()))?;
        Ok(found.map(|(version, value)| Versioned { version, value }))
    }

    async fn set_if(
        &mut self,
        key: String,
        version: Option<u64>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        if let Err(e) = self.charge(value.len()) {
            return Ok(Err(e.into()));
        }
        let limit = self.access.store_bytes;
        Ok(self
            .access
            .store
            .set_if(&key, version, value, limit)
            .map_err(|e| InferenceError::from(e).into()))
    }

    async fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        let keys = self.access.store.keys(&prefix);
        let size = keys.iter().map(String::len).sum();
        if self.charge(size).is_err() {
            return Err(wasmtime::Error::msg(format!(
                "the store's keys under {prefix:?} ({size} bytes) exceed this request's host-call budget"
            )));
        }
        Ok(keys)
    }
}
