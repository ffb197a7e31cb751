//! API keys are kept only as sha256 digests and compared in constant time.

use sha2::{Digest, Sha256};

pub type KeyHash = [u8; 32];

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

pub fn parse_hex(hex_digest: &str) -> Result<KeyHash, String> {
    let bytes = hex::decode(hex_digest.trim())
        .map_err(|e| format!("api key sha256 {hex_digest:?}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("api key sha256 {hex_digest:?}: expected 64 hex digits"))
}

/// Equal without an early exit, so the time taken says nothing about where two
/// digests differ.
pub fn constant_time_eq(a: &KeyHash, b: &KeyHash) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The key from `Authorization: Bearer <key>` (or `api-key: <key>`, as Azure OpenAI clients send).
pub fn from_headers(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        return Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value)
                .trim(),
        );
    }
    headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_and_parse() {
        let h = hash("sk-test");
        assert!(constant_time_eq(&h, &hash("sk-test")));
        assert!(!constant_time_eq(&h, &hash("sk-tesT")));
        assert_eq!(parse_hex(&hex::encode(h)).unwrap(), h);
        assert!(parse_hex("abc").is_err());
    }

    #[test]
    fn reads_bearer_and_api_key_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(from_headers(&headers), Some("sk-1"));
        let mut headers = http::HeaderMap::new();
        headers.insert("api-key", "sk-2".parse().unwrap());
        assert_eq!(from_headers(&headers), Some("sk-2"));
        assert_eq!(from_headers(&http::HeaderMap::new()), None);
    }
}
