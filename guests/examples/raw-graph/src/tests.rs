//! Native tests of the routes with a fake BERT-style graph.

use super::*;

/// A fake host: model "bert" turns each token id into the state `[id, 1]`; "echo"
/// returns its inputs; any other model does not exist.
struct Fake;

fn declared(name: &str, datatype: &'static str, shape: &[i64]) -> Declared {
    Declared {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

fn host_error(code: ErrorCode, message: &str) -> HostError {
    HostError {
        code,
        message: message.into(),
        param: None,
    }
}

impl Graphs for Fake {
    fn describe(&self, model: &str) -> Result<(Vec<Declared>, Vec<Declared>), HostError> {
        match model {
            "bert" => Ok((
                vec![
                    declared("input_ids", "INT64", &[-1, -1]),
                    declared("attention_mask", "INT64", &[-1, -1]),
                ],
                vec![declared("last_hidden_state", "FP32", &[-1, -1, 2])],
            )),
            "echo" => Ok((
                vec![declared("x", "FP32", &[-1])],
                vec![declared("x", "FP32", &[-1])],
            )),
            _ => Err(host_error(ErrorCode::NotFound, "no such model")),
        }
    }

    fn encode(&self, _model: &str, text: &str) -> Result<Vec<u32>, HostError> {
        Ok(text.split(' ').map(|w| w.len() as u32).collect())
    }

    fn compute(&self, model: &str, inputs: Vec<TensorData>) -> Result<Vec<TensorData>, HostError> {
        match model {
            "bert" => {
                let ids = inputs.iter().find(|t| t.name == "input_ids").unwrap();
                assert!(inputs.iter().any(|t| t.name == "attention_mask"));
                let states: Vec<u8> = ids
                    .bytes
                    .chunks_exact(8)
                    .flat_map(|c| {
                        let id = i64::from_le_bytes(c.try_into().unwrap()) as f32;
                        [id, 1.0].into_iter().flat_map(f32::to_le_bytes)
                    })
                    .collect();
                Ok(vec![TensorData {
                    name: "last_hidden_state".into(),
                    ty: TensorType::Fp32,
                    dims: vec![1, ids.dims[1], 2],
                    bytes: states,
                }])
            }
            "echo" if inputs.len() == 1 && inputs[0].name == "x" => Ok(inputs),
            "echo" => Err(host_error(
                ErrorCode::InvalidArgument,
                "missing input \"x\"",
            )),
            _ => Err(host_error(ErrorCode::NotFound, "no such model")),
        }
    }
}

fn call(method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut read = || Ok(body.as_bytes().to_vec());
    let r = dispatch(method, path, &Fake, &mut read);
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

#[test]
fn embed_mean_pools_the_token_states_to_unit_length() {
    // Words of 3 and 1 letters: states [3, 1] and [1, 1], mean [2, 1].
    let (status, body) = call("POST", "/embed", r#"{"model":"bert","input":"abc d"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokens"], 2);
    let v: Vec<f64> = serde_json::from_value(body["embedding"].clone()).unwrap();
    let norm = 5f64.sqrt();
    assert!(
        (v[0] - 2.0 / norm).abs() < 1e-6 && (v[1] - 1.0 / norm).abs() < 1e-6,
        "{v:?}"
    );
}

#[test]
fn embed_refuses_graphs_that_are_not_bert_style() {
    let (status, body) = call("POST", "/embed", r#"{"model":"echo","input":"hi"}"#);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "model");
    let (status, body) = call("POST", "/embed", r#"{"model":"bert","input":""}"#);
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("input"))
    );
}

#[test]
fn compute_round_trips_json_tensors() {
    let (status, body) = call(
        "POST",
        "/compute",
        r#"{"model":"echo","inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1.5,-2,0.25]}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let out = &body["outputs"][0];
    assert_eq!(
        (out["name"].as_str(), out["datatype"].as_str()),
        (Some("x"), Some("FP32"))
    );
    assert_eq!(out["shape"], serde_json::json!([3]));
    assert_eq!(out["data"], serde_json::json!([1.5, -2.0, 0.25]));
}

#[test]
fn compute_checks_values_against_shape_and_datatype() {
    let cases = [
        (
            r#"[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2,3]}]"#,
            "needs their product",
        ),
        (
            r#"[{"name":"x","datatype":"INT64","shape":[1],"data":[1.5]}]"#,
            "not a INT64 value",
        ),
        (
            r#"[{"name":"x","datatype":"UINT8","shape":[1],"data":[256]}]"#,
            "not a UINT8 value",
        ),
        (
            r#"[{"name":"x","datatype":"INT32","shape":[1],"data":[3000000000]}]"#,
            "not a INT32",
        ),
        (
            r#"[{"name":"x","datatype":"STRING","shape":[1],"data":["a"]}]"#,
            "is not one of",
        ),
        (
            r#"[{"name":"x","datatype":"FP32","shape":[4294967295,4294967295,4294967295],"data":[]}]"#,
            "needs their product",
        ),
    ];
    for (inputs, says) in cases {
        let (status, body) = call(
            "POST",
            "/compute",
            &format!(r#"{{"model":"echo","inputs":{inputs}}}"#),
        );
        assert_eq!(status, 400, "{inputs}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{inputs}: {message}");
        assert_eq!(body["error"]["param"], "inputs.x");
    }
}

#[test]
fn host_errors_become_http_errors() {
    let (status, body) = call("POST", "/compute", r#"{"model":"echo","inputs":[]}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_tensor"))
    );
    let (status, body) = call("GET", "/graphs/nope", "");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, body) = call("POST", "/compute", "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = call("GET", "/elsewhere", "");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_url"))
    );
}

#[test]
fn describe_lists_inputs_and_outputs() {
    let (status, body) = call("GET", "/graphs/bert?x=1", "");
    assert_eq!(status, 200);
    assert_eq!(body["inputs"][0]["name"], "input_ids");
    assert_eq!(body["outputs"][0]["shape"], serde_json::json!([-1, -1, 2]));
}

#[test]
fn mean_pool_needs_one_row_of_token_states() {
    let t = TensorData {
        name: "y".into(),
        ty: TensorType::Fp32,
        dims: vec![2, 1, 2],
        bytes: vec![0; 16],
    };
    assert_eq!(mean_pool(&t, 1).unwrap_err().status, 400);
}
