use wasmtime::component::Resource;

use super::nnhost::inference::tensors::{Host, HostTensor, TensorType};
use super::ApiState;
use crate::tensor::{DType, Tensor};

pub fn dtype_from_wit(ty: TensorType) -> DType {
    match ty {
        TensorType::Fp16 => DType::F16,
        TensorType::Fp32 => DType::F32,
        TensorType::Fp64 => DType::F64,
        TensorType::Bf16 => DType::BF16,
        TensorType::U8 => DType::U8,
        TensorType::I32 => DType::I32,
        TensorType::I64 => DType::I64,
    }
}

pub fn dtype_to_wit(dtype: DType) -> TensorType {
    match dtype {
        DType::F16 => TensorType::Fp16,
        DType::F32 => TensorType::Fp32,
        DType::F64 => TensorType::Fp64,
        DType::BF16 => TensorType::Bf16,
        DType::U8 => TensorType::U8,
        DType::I32 => TensorType::I32,
        DType::I64 => TensorType::I64,
    }
}

impl Host for ApiState {}

impl HostTensor for ApiState {
    async fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<Tensor>> {
        if let Err(e) = self.charge(data.len()) {
            return Err(wasmtime::Error::msg(e.message));
        }
        let shape = dimensions.into_iter().map(|d| d as usize).collect();
        // A tensor whose bytes do not match its shape is a guest bug: trap, as
        // wasi-nn implementations do, rather than carry a broken value around.
        let tensor = Tensor::from_le_bytes(shape, dtype_from_wit(ty), &data)
            .map_err(|e| wasmtime::Error::msg(format!("invalid tensor: {e}")))?;
        self.push(tensor)
    }

    async fn dimensions(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .table
            .get(&tensor)?
            .shape
            .iter()
            .map(|&d| d as u32)
            .collect())
    }

    async fn ty(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorType> {
        Ok(dtype_to_wit(self.table.get(&tensor)?.dtype()))
    }

    async fn data(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        let bytes = self.table.get(&tensor)?.to_le_bytes();
        if let Err(e) = self.charge(bytes.len()) {
            return Err(wasmtime::Error::msg(e.message));
        }
        Ok(bytes)
    }

    async fn drop(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<()> {
        self.delete(tensor)?;
        Ok(())
    }
}
