//! Finding and loading ONNX Runtime. `ort` is built with `load-dynamic`, so the
//! shared library comes from PyPI's `onnxruntime` wheel (installed into the project's
//! `.venv` by `just setup`); a user never has to set an environment variable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// ORT keeps only a weak reference to its environment; this keeps it alive.
static ENVIRONMENT: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads the library and commits ORT's one process-wide environment. Safe to call
/// more than once; the first successful path wins.
pub fn init(configured: &str) -> Result<&'static Path> {
    if let Some((path, _)) = ENVIRONMENT.get() {
        return Ok(path);
    }
    // One loader at a time: two threads loading the library and committing an
    // environment at once made the second fail (seen in parallel unit tests).
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _loading = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, _)) = ENVIRONMENT.get() {
        return Ok(path);
    }
    let path = locate(configured)?;
    let environment = ort::init_from(&path)
        .map_err(|e| anyhow!("loading ONNX Runtime from {}: {e}", path.display()))?
        .with_name("nnhost")
        .build()
        .map_err(|e| anyhow!("creating the ONNX Runtime environment: {e}"))?;
    let (path, _) = ENVIRONMENT.get_or_init(|| (path, environment));
    Ok(path)
}

/// The process's ORT environment; [`init`] must have succeeded first.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENVIRONMENT
        .get()
        .map(|(_, env)| env)
        .context("ONNX Runtime is not initialised")
}

/// Where the library is: the config, then `ORT_DYLIB_PATH`, then a `.venv` next to
/// the working directory or the executable, then the system's library path.
pub fn locate(configured: &str) -> Result<PathBuf> {
    if !configured.is_empty() {
        let path = PathBuf::from(configured);
        if !path.is_file() {
            bail!("onnxruntime.library = {configured:?} does not exist");
        }
        return Ok(path);
    }
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("ORT_DYLIB_PATH={} does not exist", path.display());
    }
    let mut roots = vec![std::env::current_dir().context("current directory")?];
    if let Ok(exe) = std::env::current_exe() {
        // target/release/nnhost → the repository root is two levels up (three for
        // the test binaries in target/release/deps).
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    for root in &roots {
        if let Some(found) = find_in_venv(&root.join(".venv")) {
            return Ok(found);
        }
    }
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        let candidate = Path::new(dir).join("libonnxruntime.so");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "ONNX Runtime (libonnxruntime.so) was not found. Run `just setup` to install it into .venv, \
         or set onnxruntime.library in the config (or ORT_DYLIB_PATH)"
    )
}

/// `.venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so*`
fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pythons: Vec<_> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    pythons.sort();
    for python in pythons {
        let capi = python.join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        // Prefer the fully versioned file (the wheel ships libonnxruntime.so.1.x.y).
        libs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        if let Some(found) = libs.into_iter().next() {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wheel_layout_in_a_venv() {
        let dir = tempfile::tempdir().unwrap();
        let capi = dir
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(capi.join("onnxruntime_pybind11_state.so"), b"").unwrap();
        let found = find_in_venv(&dir.path().join(".venv")).unwrap();
        assert!(found.ends_with("libonnxruntime.so.1.32.0"));
    }

    #[test]
    fn a_configured_path_that_does_not_exist_is_a_clear_error() {
        let err = locate("/nonexistent/libonnxruntime.so").unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
