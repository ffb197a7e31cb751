//! A tenant's key-value store: what its guests keep between requests (the Responses
//! API's stored responses). In memory and bounded in bytes: a write that does not fit
//! evicts the oldest writes first. Lost at restart; kept across component redeploys.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

/// The longest key a guest may use.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("this tenant has no store (its store_bytes limit is 0)")]
    Disabled,
    #[error("keys are 1-{MAX_KEY_BYTES} bytes")]
    BadKey,
    #[error("a value of {size} bytes does not fit in this tenant's store of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

#[derive(Default)]
pub struct KvStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Key → (write number, value).
    entries: HashMap<String, (u64, Vec<u8>)>,
    /// Key → the write that first set it (listing order, kept across rewrites).
    first_set: HashMap<String, u64>,
    /// Writes, oldest first; an entry rewritten or deleted since leaves a stale one here.
    order: VecDeque<(u64, String)>,
    /// Keys plus values.
    bytes: usize,
    writes: u64,
}

impl KvStore {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().entries.get(key).map(|(_, v)| v.clone())
    }

    /// The value and its version (the write that made it: every write changes it).
    pub fn get_versioned(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        self.inner.lock().entries.get(key).cloned()
    }

    /// Writes `value` under `key`, evicting the oldest writes until the store holds at
    /// most `limit` bytes.
    pub fn set(&self, key: &str, value: Vec<u8>, limit: usize) -> Result<(), StoreError> {
        self.write(key, value, limit, None).map(|_| ())
    }

    /// [`KvStore::set`] if `key` is still at `version` (`None`: still absent); false,
    /// and nothing written, when another write or a delete came first.
    pub fn set_if(
        &self,
        key: &str,
        version: Option<u64>,
        value: Vec<u8>,
        limit: usize,
    ) -> Result<bool, StoreError> {
        self.write(key, value, limit, Some(version))
    }

    fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        limit: usize,
        expected: Option<Option<u64>>,
    ) -> Result<bool, StoreError> {
        if limit == 0 {
            return Err(StoreError::Disabled);
        }
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StoreError::BadKey);
        }
        let size = key.len() + value.len();
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        let mut inner = self.inner.lock();
        if let Some(expected) = expected {
            if inner.entries.get(key).map(|(write, _)| *write) != expected {
                return Ok(false);
            }
        }
        let first_set = inner.first_set.get(key).copied();
        inner.remove(key);
        while inner.bytes + size > limit {
            let Some((write, oldest)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&oldest).is_some_and(|(w, _)| *w == write) {
                inner.remove(&oldest);
            }
        }
        inner.writes += 1;
        let write = inner.writes;
        inner.order.push_back((write, key.to_string()));
        inner.entries.insert(key.to_string(), (write, value));
        inner
            .first_set
            .insert(key.to_string(), first_set.unwrap_or(write));
        inner.bytes += size;
        // Stale write records would otherwise pile up under rewrites of one key.
        if inner.order.len() > 2 * inner.entries.len() + 64 {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|(w, k)| entries.get(k).is_some_and(|(current, _)| current == w));
        }
        Ok(true)
    }

    pub fn delete(&self, key: &str) -> bool {
        self.inner.lock().remove(key)
    }

    /// The keys starting with `prefix`, in the order they were first set.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let inner = self.inner.lock();
        let mut keys: Vec<(u64, &String)> = inner
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(|k| (inner.first_set.get(k).copied().unwrap_or_default(), k))
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Entries and bytes held.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.entries.len(), inner.bytes)
    }
}

impl Inner {
    fn remove(&mut self, key: &str) -> bool {
        self.first_set.remove(key);
        match self.entries.remove(key) {
            Some((_, value)) => {
                self.bytes -= key.len() + value.len();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_until_deleted() {
        let store = KvStore::default();
        store.set("a", b"one".to_vec(), 100).unwrap();
        store.set("a", b"two".to_vec(), 100).unwrap();
        assert_eq!(store.get("a").as_deref(), Some(&b"two"[..]));
        assert_eq!(store.size(), (1, 4));
        assert!(store.delete("a"));
        assert!(!store.delete("a"));
        assert_eq!(store.get("a"), None);
        assert_eq!(store.size(), (0, 0));
    }

    #[test]
    fn the_oldest_writes_make_room() {
        let store = KvStore::default();
        for key in ["k1", "k2", "k3"] {
            store.set(key, vec![0; 28], 100).unwrap();
        }
        // k1 rewritten: now the newest; k2 is the oldest.
        store.set("k1", vec![1; 28], 100).unwrap();
        store.set("k4", vec![0; 28], 100).unwrap();
        assert_eq!(store.get("k2"), None);
        assert!(
            store.get("k1").is_some() && store.get("k3").is_some() && store.get("k4").is_some()
        );
        assert!(store.size().1 <= 100);
    }

    #[test]
    fn keys_list_by_prefix_in_first_set_order() {
        let store = KvStore::default();
        for key in ["chat:b", "response:x", "chat:a", "chat:c"] {
            store.set(key, vec![0; 8], 1000).unwrap();
        }
        // A rewrite keeps its place; deleted and set anew goes last.
        store.set("chat:b", vec![1; 8], 1000).unwrap();
        store.delete("chat:a");
        store.set("chat:a", vec![2; 8], 1000).unwrap();
        assert_eq!(store.keys("chat:"), ["chat:b", "chat:c", "chat:a"]);
        assert_eq!(store.keys(""), ["chat:b", "response:x", "chat:c", "chat:a"]);
        assert!(store.keys("nothing").is_empty());
        // Evicted keys are gone from the listing.
        store.set("big", vec![0; 960], 1000).unwrap();
        assert!(store.keys("chat:").len() < 3);
        let entries = store.size().0;
        assert_eq!(store.inner.lock().first_set.len(), entries);
    }

    #[test]
    fn set_if_writes_only_over_the_version_it_read() {
        let store = KvStore::default();
        assert!(store.set_if("k", None, b"one".to_vec(), 100).unwrap());
        assert!(!store.set_if("k", None, b"two".to_vec(), 100).unwrap());
        let (version, value) = store.get_versioned("k").unwrap();
        assert_eq!(value, b"one");
        // Another request writes in between: the stale version loses.
        store.set("k", b"other".to_vec(), 100).unwrap();
        assert!(!store
            .set_if("k", Some(version), b"mine".to_vec(), 100)
            .unwrap());
        let (version, _) = store.get_versioned("k").unwrap();
        assert!(store
            .set_if("k", Some(version), b"mine".to_vec(), 100)
            .unwrap());
        assert_eq!(store.get("k").as_deref(), Some(&b"mine"[..]));
        store.delete("k");
        assert!(!store
            .set_if("k", Some(version), b"x".to_vec(), 100)
            .unwrap());
        assert_eq!(
            store.set_if("k", None, vec![], 0),
            Err(StoreError::Disabled)
        );
    }

    #[test]
    fn limits_are_errors() {
        let store = KvStore::default();
        assert_eq!(store.set("a", vec![], 0), Err(StoreError::Disabled));
        assert_eq!(store.set("", vec![], 10), Err(StoreError::BadKey));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(store.set(&long, vec![], 1000), Err(StoreError::BadKey));
        assert_eq!(
            store.set("a", vec![0; 10], 10),
            Err(StoreError::TooLarge {
                size: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn rewriting_one_key_does_not_grow_the_write_log() {
        let store = KvStore::default();
        for i in 0..10_000u32 {
            store.set("same", i.to_le_bytes().to_vec(), 100).unwrap();
        }
        assert!(store.inner.lock().order.len() <= 66);
    }
}
