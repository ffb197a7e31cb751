//! Compiled components cached on disk by content hash, so a restart (or a second
//! tenant using the same component) does not pay for compilation again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct ComponentCache {
    dir: PathBuf,
    /// Distinguishes compilations by wasmtime version and engine settings.
    engine_tag: String,
}

impl ComponentCache {
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<Component> {
        let key = hex::encode(Sha256::digest(wasm));
        let path = self.dir.join(format!("{key}-{}.cwasm", self.engine_tag));
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an engine with
            // the same compatibility hash, in a directory only this host writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component")
                }
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        Ok(unsafe { Component::deserialize(engine, &compiled) }?)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
