//! `Tensor::from_le_bytes` (the WIT `tensors` constructor and `/v2` binary tensors):
//! any shape, dtype and bytes must give a tensor or an error, never a panic; a
//! tensor must hold exactly the shape's element count and give the bytes back.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nnhost::tensor::{element_count, DType, Tensor};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Small dimensions mostly (so shapes can match the data), any size sometimes.
    shape: Vec<Dim>,
    dtype: u8,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Dim {
    Small(u8),
    Any(usize),
}

const DTYPES: [DType; 7] = DType::ALL;

fuzz_target!(|input: Input| {
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|d| match *d {
            Dim::Small(n) => usize::from(n % 9),
            Dim::Any(n) => n,
        })
        .collect();
    let dtype = DTYPES[usize::from(input.dtype) % DTYPES.len()];
    if let Ok(tensor) = Tensor::from_le_bytes(shape.clone(), dtype, &input.bytes) {
        assert_eq!(tensor.dtype(), dtype);
        assert_eq!(tensor.shape, shape);
        assert_eq!(
            element_count(&shape).unwrap() * dtype.size(),
            input.bytes.len()
        );
        assert_eq!(tensor.data.len() * dtype.size(), input.bytes.len());
        assert_eq!(tensor.to_le_bytes(), input.bytes);
        // `v2_name` round-trips for every dtype a tensor can have.
        assert_eq!(DType::from_v2_name(dtype.v2_name()), Some(dtype));
    }
});
