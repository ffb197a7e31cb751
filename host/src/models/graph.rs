//! A bare ONNX graph (`kind = "graph"`): any model ONNX Runtime can run, a
//! classifier, a cross-encoder, a vision model. The host adds no pooling or
//! decoding: guests run it through the WASI-NN style `graph` interface and clients
//! through `/v2` (Open Inference Protocol). A folder's `tokenizer.json`, when there
//! is one, serves the `tokenizer` interface, so a guest can feed a text model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tokenizers::Tokenizer;

use super::graph_gate::GraphGate;
use crate::config::ModelConfig;
use crate::providers::cpu::CpuProvider;
use crate::providers::remote::RemoteProvider;
use crate::providers::router::ProviderRouter;
use crate::providers::{GraphSignature, NamedTensors, ProviderError};

pub struct GraphModel {
    pub onnx: PathBuf,
    pub tokenizer: Option<Tokenizer>,
    /// Local CPU, or the remote endpoint for large batches (`remote`, `routing`).
    pub router: Arc<ProviderRouter>,
    signature: GraphSignature,
    /// The door to runs: their size and their turn.
    pub gate: GraphGate,
}

impl GraphModel {
    pub fn load(config: &ModelConfig) -> Result<Self> {
        let (onnx, folder) = locate(&config.path, config.onnx.as_deref())?;
        let tokenizer = match folder.map(|f| f.join("tokenizer.json")) {
            Some(path) if path.is_file() => Some(super::load_tokenizer(&path)?),
            _ => None,
        };
        let provider = Arc::new(CpuProvider::load(&onnx, &config.cpu)?);
        let signature = provider.signature().clone();
        let remote = match &config.remote {
            Some(remote) => Some(Arc::new(RemoteProvider::new(remote, &config.name)?)),
            None => None,
        };
        let router = ProviderRouter::new(
            &config.name,
            provider,
            remote,
            config.routing.clone(),
            signature.clone(),
        );
        Ok(Self {
            onnx,
            tokenizer,
            router,
            signature,
            gate: GraphGate::new(&config.batching),
        })
    }

    pub fn signature(&self) -> &GraphSignature {
        &self.signature
    }

    /// Runs the graph on the provider the router picks for a batch of the first
    /// input's leading dimension. Inputs are checked here, before routing, so a
    /// caller's mistake is never charged to the remote endpoint's health.
    pub fn run(&self, inputs: NamedTensors) -> Result<(NamedTensors, String), ProviderError> {
        self.signature.check_inputs(&inputs)?;
        self.gate.check_size(&self.signature, &inputs)?;
        let rows = inputs
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(1);
        self.router.run(rows, inputs)
    }
}

/// The ONNX file and the folder around it. `path` is the file itself, or a folder
/// holding `onnx` (when the config names one), `onnx/model.onnx` or `model.onnx`.
fn locate(path: &Path, onnx: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>)> {
    if path.is_file() {
        return Ok((path.to_path_buf(), None));
    }
    if !path.is_dir() {
        bail!(
            "{} does not exist (a graph model's path is an .onnx file or a folder holding one)",
            path.display()
        );
    }
    let candidates: Vec<PathBuf> = match onnx {
        Some(file) => vec![path.join(file)],
        None => vec![path.join("onnx/model.onnx"), path.join("model.onnx")],
    };
    match candidates.iter().find(|c| c.is_file()) {
        Some(file) => Ok((file.clone(), Some(path.to_path_buf()))),
        None => bail!(
            "no ONNX file in {}: looked for {}",
            path.display(),
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_the_file_in_a_folder_or_the_file_itself() {
        let dir = std::env::temp_dir().join(format!("nnhost-graph-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        let err = locate(&dir, None).unwrap_err().to_string();
        assert!(
            err.contains("onnx/model.onnx") && err.contains("model.onnx"),
            "{err}"
        );

        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
        assert_eq!(
            locate(&dir, None).unwrap(),
            (dir.join("model.onnx"), Some(dir.clone()))
        );
        std::fs::write(dir.join("onnx/model.onnx"), b"x").unwrap();
        assert_eq!(locate(&dir, None).unwrap().0, dir.join("onnx/model.onnx"));
        assert_eq!(
            locate(&dir, Some(Path::new("model.onnx"))).unwrap().0,
            dir.join("model.onnx")
        );
        assert_eq!(
            locate(&dir.join("model.onnx"), None).unwrap(),
            (dir.join("model.onnx"), None)
        );
        assert!(locate(&dir.join("missing"), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
