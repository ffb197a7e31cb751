//! `nnhost:inference/store`: the calling tenant's key-value store
//! ([`crate::tenants::store`]). Values count against the request's host-call bytes.

use super::nnhost::inference::store::{Host, Versioned};
use super::{ApiState, WitError};
use crate::error::{ErrorCode, InferenceError};
use crate::tenants::store::{KvStore, StoreError};

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

    /// Charges `value` to the request and hands it to `write` with the tenant's limit.
    fn charged_write<T>(
        &mut self,
        value: Vec<u8>,
        write: impl FnOnce(&KvStore, Vec<u8>, usize) -> Result<T, StoreError>,
    ) -> Result<T, WitError> {
        self.charge(value.len())?;
        write(&self.access.store, value, self.access.store_bytes)
            .map_err(|e| InferenceError::from(e).into())
    }
}

impl Host for ApiState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let value = self.access.store.get(&key);
        self.charge_read(&key, value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self.charged_write(value, |store, value, limit| store.set(&key, value, limit)))
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
        Ok(self.charged_write(value, |store, value, limit| {
            store.set_if(&key, version, value, limit)
        }))
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
