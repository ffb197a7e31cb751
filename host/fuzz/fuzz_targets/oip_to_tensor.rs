//! Open Inference Protocol request decoding, as `/v2/models/{m}/infer` and the
//! remote provider do it: the first two bytes give the length of the JSON part
//! (Triton's `Inference-Header-Content-Length`), the rest is the binary part.
//! Each input is decoded with `oip::to_tensor` (JSON data) or, with a
//! `binary_data_size` parameter, `Tensor::from_le_bytes` over the binary part
//! (the same steps as `server::v2::decode_binary`). Errors are fine; panics are not.
//! A decoded tensor must survive `from_tensor` → `to_tensor` unchanged whenever
//! its values are representable in JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nnhost::oip::{self, InferRequest, InferResponse, JsonTensor};
use nnhost::tensor::{DType, Tensor};

fn decode_binary(input: &JsonTensor, bytes: &[u8]) -> Result<Tensor, String> {
    let dtype = DType::from_v2_name(&input.datatype).ok_or("unsupported datatype")?;
    let shape = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| "negative dimension".to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::from_le_bytes(shape, dtype, bytes).map_err(|e| e.to_string())
}

fn check(tensor: &Tensor) {
    let json = oip::from_tensor("x", tensor);
    // Non-finite floats become `null` (JSON has no NaN or infinity) and cannot come back.
    if let Ok(back) = oip::to_tensor(&json) {
        assert_eq!(&back, tensor, "from_tensor -> to_tensor changed the tensor");
    }
    let text = serde_json::to_vec(&json).expect("a JsonTensor serialises");
    let _ = serde_json::from_slice::<JsonTensor>(&text).expect("a serialised JsonTensor parses");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let header_len = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    let (json_part, mut binary) = if header_len <= rest.len() {
        rest.split_at(header_len)
    } else {
        (rest, &[][..])
    };

    // A single tensor on its own (the remote provider reads outputs this way).
    if let Ok(t) = serde_json::from_slice::<JsonTensor>(json_part) {
        if let Ok(tensor) = oip::to_tensor(&t) {
            check(&tensor);
        }
    }
    // A response (the remote provider's side).
    if let Ok(r) = serde_json::from_slice::<InferResponse>(json_part) {
        for out in &r.outputs {
            if let Ok(tensor) = oip::to_tensor(out) {
                check(&tensor);
            }
        }
    }
    // A request (the /v2 server's side), binary extension included.
    let Ok(request) = serde_json::from_slice::<InferRequest>(json_part) else {
        return;
    };
    for input in &request.inputs {
        let tensor = match oip::binary_size(&input.parameters) {
            Some(size) => {
                if size > binary.len() {
                    return;
                }
                let (bytes, tail) = binary.split_at(size);
                binary = tail;
                decode_binary(input, bytes)
            }
            None => oip::to_tensor(input),
        };
        match tensor {
            Ok(t) => check(&t),
            Err(_) => return,
        }
    }
});
