//! Native tests of the routing and ranking with a fake embedder.

use super::*;

/// A fake embedder: word-overlap vectors over a tiny vocabulary, normalised.
fn fake(texts: Vec<String>) -> Result<EmbeddingBatch, HostError> {
    const VOCAB: &[&str] = &["paris", "whale", "rust", "coffee", "cats"];
    let mut data = Vec::new();
    for t in &texts {
        let t = t.to_lowercase();
        let mut v: Vec<f32> = VOCAB.iter().map(|w| t.contains(w) as u8 as f32).collect();
        v.push(0.1); // never all zero
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        data.extend(v.iter().map(|x| x / norm));
    }
    Ok(EmbeddingBatch {
        dimensions: VOCAB.len() as u32 + 1,
        data,
        prompt_tokens: 0,
        provider: "fake".into(),
    })
}

fn call(method: &str, target: &str, body: &str) -> (u16, Value) {
    let mut read = || Ok(body.as_bytes().to_vec());
    let r = dispatch(method, target, &fake, &mut read);
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

#[test]
fn get_search_ranks_and_limits() {
    let (status, v) = call("GET", "/search?q=tell+me+about+a+whale&k=2", "");
    assert_eq!(status, 200);
    assert_eq!(v["query"], "tell me about a whale");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results[0]["text"].as_str().unwrap().contains("whale"));
    assert!(results[0]["score"].as_f64().unwrap() >= results[1]["score"].as_f64().unwrap());
}

#[test]
fn post_search_default_k() {
    let (status, v) = call("POST", "/search", r#"{"query":"Rust"}"#);
    assert_eq!(status, 200);
    assert_eq!(v["results"].as_array().unwrap().len(), DEFAULT_K);
    assert!(v["results"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Rust"));
}

#[test]
fn k_beyond_corpus_returns_everything() {
    let (_, v) = call("GET", "/search?q=cats&k=1000", "");
    assert_eq!(v["results"].as_array().unwrap().len(), CORPUS.len());
}

#[test]
fn percent_decoding() {
    let (q, k) = parse_query("q=caf%C3%A9%20au+lait&k=%35").unwrap();
    assert_eq!((q.as_str(), k), ("café au lait", 5));
    assert_eq!(parse_query("q=100%").unwrap().0, "100%");
}

#[test]
fn bad_requests_are_400_with_param() {
    for (method, target, body, param) in [
        ("GET", "/search", "", "q"),
        ("GET", "/search?k=2", "", "q"),
        ("GET", "/search?q=", "", "q"),
        ("GET", "/search?q=x&k=0", "", "k"),
        ("GET", "/search?q=x&k=two", "", "k"),
        ("POST", "/search", r#"{"k":2}"#, "query"),
        ("POST", "/search", r#"{"query":7}"#, "query"),
        ("POST", "/search", r#"{"query":"x","k":-1}"#, "k"),
    ] {
        let (status, v) = call(method, target, body);
        assert_eq!(status, 400, "{method} {target} {body}");
        assert_eq!(v["error"]["param"], param, "{method} {target} {body}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let (status, v) = call("POST", "/search", "not json");
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
}

#[test]
fn routing_errors() {
    assert_eq!(call("GET", "/nope", "").0, 404);
    let mut read = || Ok(Vec::new());
    let r = dispatch("DELETE", "/search", &fake, &mut read);
    assert_eq!(r.status, 405);
    assert!(r.headers.iter().any(|(n, _)| *n == "allow"));
    let (status, v) = call("GET", "/", "");
    assert_eq!(status, 200);
    assert_eq!(v["model"], MODEL);
}

#[test]
fn host_errors_map_to_status() {
    let not_found = |_: Vec<String>| -> Result<EmbeddingBatch, HostError> {
        Err(HostError {
            code: ErrorCode::NotFound,
            message: "no such model".into(),
            param: Some("model".into()),
        })
    };
    let mut read = || Ok(Vec::new());
    let r = dispatch("GET", "/search?q=x", &not_found, &mut read);
    assert_eq!(r.status, 404);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    assert_eq!(v["error"]["message"], "no such model");

    let short = |_: Vec<String>| -> Result<EmbeddingBatch, HostError> {
        Ok(EmbeddingBatch {
            dimensions: 3,
            data: vec![0.0; 3],
            prompt_tokens: 0,
            provider: String::new(),
        })
    };
    assert_eq!(
        dispatch("GET", "/search?q=x", &short, &mut read).status,
        500
    );
}
