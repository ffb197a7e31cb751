//! `/v1/rerank` and `/v1/score`: cosine similarity of the embeddings the host returns.

use super::*;

fn fake_with(vectors: &[[f32; 4]]) -> Fake {
    let mut h = Fake::new();
    h.data = Some(vectors.iter().flatten().copied().collect());
    h
}

#[test]
fn documents_come_most_relevant_first() {
    let h = fake_with(&[
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 2.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [3.0, 0.0, 0.0, 0.0],
    ]);
    let (r, v) = call(
        &h,
        "POST",
        "/v1/rerank",
        &json!({"model": "org/mini", "query": "q", "documents": ["far", {"text": "near"}, "same"], "top_n": 2})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("rerank-"));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (
            results[0]["index"].as_u64(),
            results[0]["document"]["text"].as_str()
        ),
        (Some(2), Some("same"))
    );
    assert!((results[0]["relevance_score"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(results[1]["index"], 1);
    assert!((results[1]["relevance_score"].as_f64().unwrap() - 0.5f64.sqrt()).abs() < 1e-6);
    assert_eq!(v["usage"]["total_tokens"], 12);
    assert!(
        matches!(&h.calls.borrow()[0].1, EmbedInput::Texts(t) if t == &["q", "far", "near", "same"])
    );
    let (_, v) = call(
        &h,
        "POST",
        "/v1/rerank",
        &json!({"model": "org/mini", "query": "q", "documents": ["a", "b", "c"], "return_documents": false})
            .to_string(),
    );
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    assert!(v["results"][0].get("document").is_none());
}

#[test]
fn scores_one_against_many_or_pairwise() {
    let h = fake_with(&[
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [2.0, 0.0, 0.0, 0.0],
    ]);
    let (r, v) = call(
        &h,
        "POST",
        "/v1/score",
        &json!({"model": "org/mini", "text_1": "q", "text_2": ["x", "y"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{v}");
    let scores: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [0.0, 1.0]);
    assert_eq!(
        (v["object"].as_str(), v["data"][1]["object"].as_str()),
        (Some("list"), Some("score"))
    );
    let h = fake_with(&[
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 3.0, 0.0, 0.0],
        [0.0, 5.0, 0.0, 0.0],
    ]);
    let (_, v) = call(
        &h,
        "POST",
        "/v1/score",
        &json!({"model": "org/mini", "text_1": ["a", "b"], "text_2": ["c", "d"]}).to_string(),
    );
    let scores: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [0.0, 1.0]);
}

#[test]
fn rerank_and_score_errors() {
    let h = Fake::new();
    for (path, body, status, param, says) in [
        (
            "/v1/rerank",
            json!({"model": "org/mini", "documents": ["a"]}),
            400,
            Some("query"),
            "Missing required",
        ),
        (
            "/v1/rerank",
            json!({"model": "org/mini", "query": "q"}),
            400,
            Some("documents"),
            "Missing required",
        ),
        (
            "/v1/rerank",
            json!({"model": "org/mini", "query": "q", "documents": []}),
            400,
            Some("documents"),
            "at least one",
        ),
        (
            "/v1/rerank",
            json!({"model": "org/mini", "query": "q", "documents": [5]}),
            400,
            Some("documents[0]"),
            "a string",
        ),
        (
            "/v1/rerank",
            json!({"model": "org/mini", "query": "q", "documents": [{"t": "x"}]}),
            400,
            Some("documents[0].text"),
            "Missing",
        ),
        (
            "/v1/rerank",
            json!({"model": "org/mini", "query": "q", "documents": ["a"], "top_n": 0}),
            400,
            Some("top_n"),
            "minimum",
        ),
        (
            "/v1/rerank",
            json!({"model": "e5", "query": "q", "documents": ["a", "b", "c"]}),
            400,
            Some("documents"),
            "at most 3",
        ),
        (
            "/v1/rerank",
            json!({"model": "chatty", "query": "q", "documents": ["a"]}),
            400,
            Some("model"),
            "embedding model",
        ),
        (
            "/v1/rerank",
            json!({"model": "nope", "query": "q", "documents": ["a"]}),
            404,
            Some("model"),
            "does not exist",
        ),
        (
            "/v1/score",
            json!({"model": "org/mini", "text_1": ["a", "b"], "text_2": ["c"]}),
            400,
            Some("text_2"),
            "pair by pair",
        ),
        (
            "/v1/score",
            json!({"model": "org/mini", "text_1": [], "text_2": "c"}),
            400,
            Some("text_1"),
            "at least one",
        ),
        (
            "/v1/score",
            json!({"model": "org/mini", "text_1": "a", "text_2": [1]}),
            400,
            Some("text_2[0]"),
            "a string",
        ),
    ] {
        assert_error(
            &call(&h, "POST", path, &body.to_string()),
            status,
            param,
            says,
        );
    }
    assert!(h.calls.borrow().is_empty());
}
