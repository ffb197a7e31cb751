//! Reading a model folder in the Hugging Face sentence-transformers layout — what
//! `models/prepare.py` writes and what a downloaded HF repository (e.g.
//! bge-small-en-v1.5 with `onnx/model.onnx`) already is. One loader for both.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::pooling::Pooling;
use super::read_json;

#[derive(Debug, Clone)]
pub struct SentenceTransformerFolder {
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub dimensions: Option<usize>,
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct ModelConfigJson {
    max_position_embeddings: Option<usize>,
    hidden_size: Option<usize>,
}

impl SentenceTransformerFolder {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "model folder {} does not exist (run `just models` to prepare it)",
                dir.display()
            );
        }
        let onnx = ["onnx/model.onnx", "model.onnx"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
            .with_context(|| format!("{}: no onnx/model.onnx or model.onnx", dir.display()))?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            bail!("{}: no tokenizer.json", dir.display());
        }

        // modules.json names the pooling folder and says whether vectors are normalised.
        let modules: Vec<Module> = match std::fs::read(dir.join("modules.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("parsing modules.json")?,
            Err(_) => Vec::new(),
        };
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with("models.Pooling"))
            .map(|m| m.path.clone())
            .unwrap_or_else(|| "1_Pooling".into());
        let normalize = modules.iter().any(|m| m.kind.ends_with("models.Normalize"));
        let pooling_config: PoolingConfig =
            read_json(&dir.join(pooling_dir).join("config.json"))?.unwrap_or_default();
        let pooling = if pooling_config.pooling_mode_cls_token {
            Pooling::Cls
        } else if pooling_config.pooling_mode_max_tokens {
            Pooling::Max
        } else if pooling_config.pooling_mode_lasttoken {
            Pooling::LastToken
        } else {
            // Mean is sentence-transformers' default when nothing is said.
            let _ = pooling_config.pooling_mode_mean_tokens;
            Pooling::Mean
        };

        let model_config: ModelConfigJson =
            read_json(&dir.join("config.json"))?.unwrap_or_default();
        let st_config: SentenceBertConfig =
            read_json(&dir.join("sentence_bert_config.json"))?.unwrap_or_default();
        let max_seq_length = st_config
            .max_seq_length
            .or(model_config.max_position_embeddings)
            .unwrap_or(512);
        let dimensions = pooling_config
            .word_embedding_dimension
            .or(model_config.hidden_size);

        Ok(Self {
            onnx,
            tokenizer,
            pooling,
            normalize,
            max_seq_length,
            dimensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_a_bge_style_folder_with_cls_pooling() {
        let dir = folder(&[
            ("onnx/model.onnx", ""),
            ("tokenizer.json", "{}"),
            (
                "config.json",
                r#"{"hidden_size": 384, "max_position_embeddings": 512}"#,
            ),
            (
                "1_Pooling/config.json",
                r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true}"#,
            ),
            (
                "modules.json",
                r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                    {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                    {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
            ),
            (
                "sentence_bert_config.json",
                r#"{"max_seq_length": 512, "do_lower_case": true}"#,
            ),
        ]);
        let f = SentenceTransformerFolder::read(dir.path()).unwrap();
        assert_eq!(f.pooling, Pooling::Cls);
        assert!(f.normalize);
        assert_eq!(f.max_seq_length, 512);
        assert_eq!(f.dimensions, Some(384));
        assert!(f.onnx.ends_with("onnx/model.onnx"));
    }

    #[test]
    fn defaults_to_mean_pooling_without_normalisation() {
        let dir = folder(&[("model.onnx", ""), ("tokenizer.json", "{}")]);
        let f = SentenceTransformerFolder::read(dir.path()).unwrap();
        assert_eq!(f.pooling, Pooling::Mean);
        assert!(!f.normalize);
        assert_eq!(f.max_seq_length, 512);
    }

    #[test]
    fn a_missing_folder_says_how_to_prepare_it() {
        let err = SentenceTransformerFolder::read(Path::new("/nonexistent/model")).unwrap_err();
        assert!(err.to_string().contains("just models"), "{err}");
    }
}
