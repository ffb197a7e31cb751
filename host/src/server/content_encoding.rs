//! Compressed request bodies (`Content-Encoding: gzip` or `deflate`), decoded before
//! anything else reads them, so a bulk-embedding client can upload its texts
//! compressed and guests and `/v2` always see plain bytes. The decoded size counts
//! against the same body limit as a plain upload: a small bomb is still a 413.

use std::io::Read;

use bytes::Bytes;
use flate2::read::{GzDecoder, ZlibDecoder};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::HeaderValue;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error(
        "Content-Encoding '{0}' is not supported; send the body uncompressed, gzip or deflate"
    )]
    Unsupported(String),
    #[error("the request body is not valid {encoding} data: {reason}")]
    Corrupt { encoding: String, reason: String },
    #[error("the request body is larger than the limit of {0} bytes once decompressed")]
    TooLarge(usize),
}

impl DecodeError {
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::Unsupported(_) => 415,
            DecodeError::Corrupt { .. } => 400,
            DecodeError::TooLarge(_) => 413,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Unsupported(_) => "unsupported_content_encoding",
            DecodeError::Corrupt { .. } => "invalid_body_encoding",
            DecodeError::TooLarge(_) => "request_too_large",
        }
    }
}

/// Decodes `body` by the request's `Content-Encoding` (codings applied in order, as
/// RFC 9110 lists them) and rewrites the headers to describe the plain body.
pub fn decode(
    headers: &mut http::HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let codings: Vec<String> = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() || body.is_empty() {
        // No body is no body in any coding (a GET that carries the header anyway).
        return Ok(body);
    }
    let mut plain = body;
    for coding in codings.iter().rev() {
        plain = match coding.as_str() {
            "gzip" | "x-gzip" => read_limited(GzDecoder::new(&plain[..]), coding, limit)?,
            // HTTP's "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2).
            "deflate" => read_limited(ZlibDecoder::new(&plain[..]), coding, limit)?,
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
    }
    headers.remove(CONTENT_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(plain.len()));
    Ok(plain)
}

fn read_limited(decoder: impl Read, coding: &str, limit: usize) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt {
            encoding: coding.to_string(),
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    fn headers(encoding: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        h.insert(CONTENT_LENGTH, HeaderValue::from(1));
        h
    }

    #[test]
    fn gzip_and_deflate_bodies_are_decoded_and_the_headers_describe_the_plain_body() {
        let text = br#"{"input":"hello"}"#;
        let mut h = headers("gzip");
        assert_eq!(decode(&mut h, gzip(text), 1024).unwrap(), &text[..]);
        assert!(h.get(CONTENT_ENCODING).is_none());
        assert_eq!(h[CONTENT_LENGTH], text.len().to_string().as_str());

        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(text).unwrap();
        let mut h = headers("Deflate");
        assert_eq!(
            decode(&mut h, z.finish().unwrap().into(), 1024).unwrap(),
            &text[..]
        );
    }

    #[test]
    fn plain_identity_and_empty_bodies_pass_untouched() {
        let mut h = http::HeaderMap::new();
        assert_eq!(decode(&mut h, Bytes::from_static(b"x"), 1).unwrap(), "x");
        let mut h = headers("identity");
        assert_eq!(decode(&mut h, Bytes::from_static(b"x"), 1).unwrap(), "x");
        let mut h = headers("gzip");
        assert_eq!(decode(&mut h, Bytes::new(), 1).unwrap(), "");
    }

    #[test]
    fn stacked_codings_are_undone_last_first() {
        let mut h = headers("gzip, gzip");
        assert_eq!(decode(&mut h, gzip(&gzip(b"twice")), 64).unwrap(), "twice");
    }

    #[test]
    fn unknown_corrupt_and_oversized_bodies_are_refused() {
        let e = decode(&mut headers("br"), Bytes::from_static(b"x"), 64).unwrap_err();
        assert_eq!(
            (e.http_status(), e.code()),
            (415, "unsupported_content_encoding")
        );
        let e = decode(&mut headers("gzip"), Bytes::from_static(b"not gzip"), 64).unwrap_err();
        assert_eq!(e.http_status(), 400);
        // 1 MiB of zeros compresses to a few KiB: the limit applies to what it expands to.
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 16 * 1024);
        let e = decode(&mut headers("gzip"), bomb, 65536).unwrap_err();
        assert_eq!(e, DecodeError::TooLarge(65536));
    }
}
