use std::sync::Arc;

use wasmtime::component::Resource;

use super::nnhost::inference::graph::{Host, HostExecutionContext, HostGraph, TensorInfo};
use super::tensors::dtype_to_wit;
use super::{ApiState, WitError};
use crate::error::InferenceError;
use crate::models::LoadedModel;
use crate::tensor::Tensor;

pub struct GraphHandle {
    model: Arc<LoadedModel>,
}

pub struct ExecutionContext {
    model: Arc<LoadedModel>,
}

fn infos(list: &[crate::providers::TensorInfo]) -> Vec<TensorInfo> {
    list.iter()
        .map(|i| TensorInfo {
            name: i.name.clone(),
            ty: dtype_to_wit(i.dtype),
            dimensions: i.shape.clone(),
        })
        .collect()
}

impl Host for ApiState {
    async fn load_by_name(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<GraphHandle>, WitError>> {
        let model = match self
            .access
            .get(&name)
            .and_then(|m| m.graph().map(|_| m.clone()))
        {
            Ok(model) => model,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(self.push(GraphHandle { model })?))
    }
}

impl HostGraph for ApiState {
    async fn inputs(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<Vec<TensorInfo>> {
        Ok(self
            .table
            .get(&graph)?
            .model
            .graph()
            .map(|(_, s)| infos(&s.inputs))
            .unwrap_or_default())
    }

    async fn outputs(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<Vec<TensorInfo>> {
        Ok(self
            .table
            .get(&graph)?
            .model
            .graph()
            .map(|(_, s)| infos(&s.outputs))
            .unwrap_or_default())
    }

    async fn init_execution_context(
        &mut self,
        graph: Resource<GraphHandle>,
    ) -> wasmtime::Result<Result<Resource<ExecutionContext>, WitError>> {
        let model = self.table.get(&graph)?.model.clone();
        Ok(Ok(self.push(ExecutionContext { model })?))
    }

    async fn drop(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.delete(graph)?;
        Ok(())
    }
}

impl HostExecutionContext for ApiState {
    async fn compute(
        &mut self,
        context: Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<Tensor>)>, WitError>> {
        let model = self.table.get(&context)?.model.clone();
        // The guest hands its input tensors over (`own<tensor>`): take them out of
        // the table rather than copy them and leave the originals behind.
        let mut named = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            named.push((name, self.delete(tensor)?));
        }
        // Waiting for the turn and the run are not the guest's CPU time.
        let waiting = crate::sandbox::WaitingForInference::start();
        let turn = match model.graph_turn(&self.access.tenant).await {
            Ok(turn) => turn,
            Err(e) => {
                self.waited += waiting.end();
                return Ok(Err(e.into()));
            }
        };
        // ORT blocks: run it on the blocking pool, never on an async worker.
        let outputs = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let (graph, _) = model.graph()?;
            Ok::<_, InferenceError>(graph.run(named)?.0)
        })
        .await;
        self.waited += waiting.end();
        let outputs =
            outputs.map_err(|e| wasmtime::Error::msg(format!("graph worker panicked: {e}")))?;
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err(e.into())),
        };
        // The outputs stay in host memory for as long as the guest holds them, so
        // they count against the request's budget as a tensor it made would;
        // otherwise a guest could pile up outputs far beyond it, one compute at a time.
        let bytes = outputs
            .iter()
            .map(|(_, t)| t.data.len() * t.dtype().size())
            .sum();
        if let Err(e) = self.charge(bytes) {
            return Ok(Err(e.into()));
        }
        let mut handles = Vec::with_capacity(outputs.len());
        for (name, tensor) in outputs {
            handles.push((name, self.push(tensor)?));
        }
        Ok(Ok(handles))
    }

    async fn drop(&mut self, context: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.delete(context)?;
        Ok(())
    }
}
