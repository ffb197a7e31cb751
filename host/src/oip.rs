//! The Open Inference Protocol (KServe v2 / Triton) JSON tensor format, shared by
//! the remote provider (client) and nnhost's own `/v2` endpoints (server).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tensor::{element_count, DType, Tensor, TensorData};

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Absent when the tensor travels in the binary part (Triton's binary extension).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `parameters.binary_data_size` of a tensor in Triton's binary extension.
pub fn binary_size(parameters: &Option<Value>) -> Option<usize> {
    parameters
        .as_ref()?
        .get("binary_data_size")?
        .as_u64()
        .map(|n| n as usize)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<JsonTensor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<JsonTensor>,
}

/// JSON tensor → host tensor. Data may be flat or nested (the protocol allows both).
pub fn to_tensor(t: &JsonTensor) -> Result<Tensor, String> {
    let dtype = DType::from_v2_name(&t.datatype).ok_or_else(|| {
        format!(
            "input {:?}: datatype {:?} is not supported",
            t.name, t.datatype
        )
    })?;
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("input {:?}: negative dimension {d}", t.name))
        })
        .collect::<Result<_, _>>()?;
    let expected = element_count(&shape).map_err(|e| format!("input {:?}: {e}", t.name))?;
    let mut flat = Vec::with_capacity(expected.min(1 << 24));
    flatten(&t.data, &mut flat, expected).map_err(|e| format!("input {:?}: {e}", t.name))?;
    if flat.len() != expected {
        return Err(format!(
            "input {:?}: shape {:?} needs {expected} values, got {}",
            t.name,
            t.shape,
            flat.len()
        ));
    }
    let bad = |v: &Value| {
        format!(
            "input {:?}: {v} is not a valid {:?} value",
            t.name, t.datatype
        )
    };
    macro_rules! ints {
        ($t:ty) => {
            flat.iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|n| <$t>::try_from(n).ok())
                        .ok_or_else(|| bad(v))
                })
                .collect::<Result<Vec<$t>, _>>()?
        };
    }
    let floats = || {
        flat.iter()
            .map(|v| v.as_f64().ok_or_else(|| bad(v)))
            .collect::<Result<Vec<f64>, _>>()
    };
    let data = match dtype {
        DType::F32 => TensorData::F32(floats()?.into_iter().map(|x| x as f32).collect()),
        DType::F64 => TensorData::F64(floats()?),
        DType::F16 => TensorData::F16(
            floats()?
                .into_iter()
                .map(|x| half::f16::from_f64(x).to_bits())
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(
            floats()?
                .into_iter()
                .map(|x| half::bf16::from_f64(x).to_bits())
                .collect(),
        ),
        DType::U8 => TensorData::U8(ints!(u8)),
        DType::I32 => TensorData::I32(ints!(i32)),
        DType::I64 => TensorData::I64(ints!(i64)),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn flatten(value: &Value, out: &mut Vec<Value>, limit: usize) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
                if out.len() > limit {
                    return Err(format!("more values than the shape allows ({limit})"));
                }
            }
            Ok(())
        }
        Value::Number(_) => {
            out.push(value.clone());
            Ok(())
        }
        other => Err(format!("{other} is not a number")),
    }
}

/// Host tensor → JSON tensor (flat data, as Triton answers).
pub fn from_tensor(name: &str, tensor: &Tensor) -> JsonTensor {
    let data: Vec<Value> = match &tensor.data {
        TensorData::F32(v) => v.iter().map(|&x| json_float(x as f64)).collect(),
        TensorData::F64(v) => v.iter().map(|&x| json_float(x)).collect(),
        TensorData::F16(v) => v
            .iter()
            .map(|&b| json_float(half::f16::from_bits(b).to_f64()))
            .collect(),
        TensorData::BF16(v) => v
            .iter()
            .map(|&b| json_float(half::bf16::from_bits(b).to_f64()))
            .collect(),
        TensorData::U8(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| Value::from(x)).collect(),
    };
    JsonTensor {
        name: name.to_string(),
        shape: tensor.shape.iter().map(|&d| d as i64).collect(),
        datatype: tensor.dtype().v2_name().to_string(),
        data: Value::Array(data),
        parameters: None,
    }
}

fn json_float(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for (datatype, data) in [
            ("FP32", serde_json::json!([1.5, -2.0, 0.25, 4.0])),
            ("FP64", serde_json::json!([1.5, -2.0, 0.25, 4.0])),
            ("FP16", serde_json::json!([1.5, -2.0, 0.25, 4.0])),
            ("BF16", serde_json::json!([1.5, -2.0, 0.25, 4.0])),
            ("UINT8", serde_json::json!([1, 2, 3, 255])),
            ("INT32", serde_json::json!([1, -2, 3, 2147483647])),
            (
                "INT64",
                serde_json::json!([[1, -2], [3, 9007199254740993i64]]),
            ),
        ] {
            let t = JsonTensor {
                name: "x".into(),
                shape: vec![2, 2],
                datatype: datatype.into(),
                data,
                parameters: None,
            };
            let tensor = to_tensor(&t).unwrap();
            let back = from_tensor("x", &tensor);
            assert_eq!(to_tensor(&back).unwrap(), tensor, "{datatype}");
        }
    }

    #[test]
    fn rejects_mismatches() {
        let t = |datatype: &str, shape: Vec<i64>, data| JsonTensor {
            name: "x".into(),
            shape,
            datatype: datatype.into(),
            data,
            parameters: None,
        };
        assert!(to_tensor(&t("FP32", vec![3], serde_json::json!([1.0, 2.0]))).is_err());
        assert!(to_tensor(&t("UINT8", vec![1], serde_json::json!([256]))).is_err());
        assert!(to_tensor(&t("INT64", vec![1], serde_json::json!([1.5]))).is_err());
        assert!(to_tensor(&t("BYTES", vec![1], serde_json::json!(["a"]))).is_err());
        assert!(to_tensor(&t("FP32", vec![-1], serde_json::json!([]))).is_err());
        assert!(to_tensor(&t("FP32", vec![1], serde_json::json!(["a"]))).is_err());
    }
}
