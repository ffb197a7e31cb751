//! `x-request-id` on every answer, as OpenAI sends it (its SDK exposes it as
//! `_request_id`): the id a client quotes in a bug report, and the id on the host's
//! log lines for that request. A proxy's or client's own id is kept when it is sane.

use http::{HeaderMap, HeaderValue};
use rand::distr::{Alphanumeric, SampleString};

pub const HEADER: &str = "x-request-id";
/// Longer ids are replaced rather than repeated into logs and answers.
const MAX_LEN: usize = 128;

/// The request's id: the one it carries when sane, else a new `req_…`. The request
/// keeps (or gets) the header, so its guest sees the same id.
pub fn take_or_make(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(HEADER).filter(|v| is_sane(v)) {
        return given.clone();
    }
    let id = format!("req_{}", Alphanumeric.sample_string(&mut rand::rng(), 24));
    let value = HeaderValue::from_str(&id).expect("alphanumeric is a valid header value");
    headers.insert(HEADER, value.clone());
    value
}

fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_id_is_kept_and_others_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("trace-42_a.b:c"));
        assert_eq!(take_or_make(&mut h), "trace-42_a.b:c");
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = take_or_make(&mut h);
            assert!(id.to_str().unwrap().starts_with("req_"), "{bad:?}");
            assert_eq!(h[HEADER], id);
        }
        let (a, b) = (
            take_or_make(&mut HeaderMap::new()),
            take_or_make(&mut HeaderMap::new()),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 28);
    }
}
