//! The host's own tensor: what crosses between the WIT `tensors` interface, the
//! providers (ORT locally, JSON over the Open Inference Protocol remotely) and `/v2`.
//! Element types are exactly wasi-nn's.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    U8,
    I32,
    I64,
}

impl DType {
    /// Every element type, in wasi-nn's order of declaration.
    pub const ALL: [DType; 7] = [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::U8,
        DType::I32,
        DType::I64,
    ];

    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// The Open Inference Protocol / Triton datatype name.
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F16 => "FP16",
            DType::BF16 => "BF16",
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::U8 => "UINT8",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
        }
    }

    pub fn from_v2_name(name: &str) -> Option<Self> {
        Some(match name {
            "FP16" => DType::F16,
            "BF16" => DType::BF16,
            "FP32" => DType::F32,
            "FP64" => DType::F64,
            "UINT8" => DType::U8,
            "INT32" => DType::I32,
            "INT64" => DType::I64,
            _ => return None,
        })
    }
}

/// Element storage. Half-precision values are kept as their raw bit patterns.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F16(Vec<u16>),
    BF16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::U8(_) => DType::U8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F16(v) | TensorData::BF16(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Debug, Error, PartialEq)]
pub enum TensorError {
    #[error("tensor of shape {shape:?} needs {expected} elements, got {actual}")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("tensor data is {actual} bytes, not a multiple of the {dtype:?} element size {size}")]
    BadByteLength {
        dtype: DType,
        size: usize,
        actual: usize,
    },
    #[error("tensor shape {0:?} is too large")]
    TooLarge(Vec<usize>),
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(TensorError::ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Decodes wasi-nn style little-endian bytes.
    pub fn from_le_bytes(
        shape: Vec<usize>,
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Self, TensorError> {
        let size = dtype.size();
        if !bytes.len().is_multiple_of(size) {
            return Err(TensorError::BadByteLength {
                dtype,
                size,
                actual: bytes.len(),
            });
        }
        fn chunks<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().unwrap()))
                .collect()
        }
        let data = match dtype {
            DType::F16 => TensorData::F16(chunks(bytes, u16::from_le_bytes)),
            DType::BF16 => TensorData::BF16(chunks(bytes, u16::from_le_bytes)),
            DType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F64 => TensorData::F64(chunks(bytes, f64::from_le_bytes)),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::I32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)),
            DType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)),
        };
        Self::new(shape, data)
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn flat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len() * N);
            for x in v {
                out.extend_from_slice(&f(*x));
            }
            out
        }
        match &self.data {
            TensorData::F16(v) | TensorData::BF16(v) => flat(v, u16::to_le_bytes),
            TensorData::F32(v) => flat(v, f32::to_le_bytes),
            TensorData::F64(v) => flat(v, f64::to_le_bytes),
            TensorData::U8(v) => v.clone(),
            TensorData::I32(v) => flat(v, i32::to_le_bytes),
            TensorData::I64(v) => flat(v, i64::to_le_bytes),
        }
    }
}

pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_for_every_dtype() {
        for dtype in DType::ALL {
            let bytes: Vec<u8> = (0..(dtype.size() * 6) as u8).collect();
            let t = Tensor::from_le_bytes(vec![2, 3], dtype, &bytes).unwrap();
            assert_eq!(t.dtype(), dtype);
            assert_eq!(t.to_le_bytes(), bytes);
        }
    }

    #[test]
    fn shape_must_match_data() {
        let err = Tensor::from_le_bytes(vec![2, 2], DType::F32, &[0; 12]).unwrap_err();
        assert!(matches!(
            err,
            TensorError::ShapeMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ));
        let err = Tensor::from_le_bytes(vec![1], DType::I64, &[0; 5]).unwrap_err();
        assert!(matches!(err, TensorError::BadByteLength { .. }));
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::U8(vec![])).is_err());
    }

    #[test]
    fn v2_names_round_trip() {
        for dtype in DType::ALL {
            assert_eq!(DType::from_v2_name(dtype.v2_name()), Some(dtype));
        }
    }
}
