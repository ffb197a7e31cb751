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
    @echo "console: http://127.0.0.1:8080/  (the web console; the OpenAI API is under /v1)"
    {{host}} serve {{ARGS}}

# Install Debian's Chromium (if missing) and the browser test's npm packages (playwright-core).
browser-setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x /usr/bin/chromium ]; then
        echo "==> installing Debian's chromium for the browser test"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
    fi
    cd tests/browser && npm ci --no-audit --no-fund

# Run every test: host and guest unit tests, model preparation checks, end-to-end HTTP and browser tests.
test: models build browser-setup scale-out-setup
    cargo test --release --workspace
    cd guests && cargo test --release
    {{python}} -m pytest -q models/tests
    {{python}} -m pytest -q tests

# Benchmarks; writes docs/BENCHMARKS.md. llama.cpp runs side by side when `bench-peers` could install it.
bench: models build
    {{just_executable()}} bench-peers || echo "==> llama-cpp-python is not installed: the chat benchmark runs without llama.cpp"
    {{python}} tests/bench/run.py --out docs/BENCHMARKS.md
    {{python}} tests/bench/chat.py --out docs/BENCHMARKS.md
    {{python}} tests/bench/tenants.py --out docs/BENCHMARKS.md

# Install the benchmark's peers (tests/bench/requirements-peers.txt: llama-cpp-python, built from source; idempotent).
bench-peers: setup
    #!/usr/bin/env bash
    set -euo pipefail
    want=$(sed -n 's/^llama-cpp-python==//p' tests/bench/requirements-peers.txt)
    have=$({{python}} -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)
    [ "$have" = "$want" ] && exit 0
    echo "==> building llama-cpp-python $want (llama.cpp from source, CPU only; 15-30 minutes on 2 cores)"
    # x86-64: the machine's vector extensions named one by one rather than -march=native, whose
    # AMX kernels crash llama_decode (SIGSEGV, 0.3.36 on an AVX-512/AMX Xeon); elsewhere native.
    isa="-DGGML_NATIVE=ON"
    if [ "$(uname -m)" = x86_64 ]; then
        flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
        has() { case "$flags" in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
        isa="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)"
        isa="$isa -DGGML_F16C=$(has f16c) -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f)"
        isa="$isa -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)"
        isa="$isa -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    fi
    export CMAKE_ARGS="${CMAKE_ARGS:-$isa -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF}"
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    # No wheel cache: a wheel built with other CMAKE_ARGS would be reinstalled as it is.
    {{python}} -m pip install --quiet --disable-pip-version-check --no-cache-dir -r tests/bench/requirements-peers.txt

# Check formatting and lints.
lint:
    cargo fmt --all --check
    cargo clippy --release --workspace -- -D warnings

# --- ARM64 (aarch64-unknown-linux-gnu): cross build on x86-64, tested under qemu-user ---

ort_version := "1.32.0"
arm64_target := "aarch64-unknown-linux-gnu"
arm64_ort := "target/aarch64-ort/libonnxruntime.so." + ort_version
# A target dir of its own: a cross build also locks the host-artifact dir (target/release),
# which would stall every x86-64 `cargo build --release` for the whole cold cross build.
arm64_target_dir := "target/aarch64"
arm64_host := arm64_target_dir / arm64_target / "release/nnhost"

# Install the aarch64 cross linker, qemu-user, the Rust target and aarch64 ONNX Runtime (idempotent).
arm64-setup: setup
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} (apt-get)"
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
    if ! rustup target list --installed | grep -qx {{arm64_target}}; then
        echo "==> adding the {{arm64_target}} Rust target"
        rustup target add {{arm64_target}}
    fi
    if [ ! -f "{{arm64_ort}}" ]; then
        wheels=models/cache/wheels-aarch64
        mkdir -p "$wheels" target/aarch64-ort
        if ! ls "$wheels"/onnxruntime-{{ort_version}}-*aarch64*.whl >/dev/null 2>&1; then
            echo "==> downloading the aarch64 onnxruntime=={{ort_version}} wheel from PyPI"
            {{python}} -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
                --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 --python-version 311 \
                --dest "$wheels" onnxruntime=={{ort_version}}
        fi
        wheel=$(ls "$wheels"/onnxruntime-{{ort_version}}-*aarch64*.whl | head -n1)
        echo "==> extracting libonnxruntime.so.{{ort_version}} from $(basename "$wheel")"
        {{python}} - "$wheel" "{{arm64_ort}}" <<'PY'
    import shutil, sys, zipfile
    wheel, dest = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as zf, zf.open("onnxruntime/capi/libonnxruntime.so.{{ort_version}}") as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
    PY
        mv "{{arm64_ort}}.part" "{{arm64_ort}}"
    fi
    # ELF e_machine (offset 18) is 0xb7 for aarch64.
    [ "$(od -An -tx1 -j18 -N1 "{{arm64_ort}}" | tr -d ' ')" = b7 ] || { echo "{{arm64_ort}} is not an aarch64 library" >&2; exit 1; }

# Cross-compile the host for aarch64: target/aarch64/aarch64-unknown-linux-gnu/release/nnhost.
build-arm64: arm64-setup guests models
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        cargo build --release --target {{arm64_target}} --target-dir {{arm64_target_dir}} -p nnhost

# Run the aarch64 host under qemu-user and compare its embeddings with the x86-64 host's.
test-arm64: build-arm64 build
    NNHOST_ARM64={{arm64_host}} NNHOST_X86={{host}} ARM64_ORT={{arm64_ort}} {{python}} tests/arm64/smoke.py

# --- Hardening: load, soak, scale-out (docs/RELIABILITY.md) ---

# Load test (e.g. `just load -n 2000 -c 64`, `just load --url URL`): mixed requests; writes tests/out/load.json.
load *ARGS: models build
    {{python}} tests/load/load_test.py {{ARGS}}

# Soak test: the load mix for MINUTES minutes, RSS every minute; writes tests/out/soak.json.
soak MINUTES="30" *ARGS: models build
    {{python}} tests/load/load_test.py --soak-minutes {{MINUTES}} {{ARGS}}

# Install Debian's nginx (if missing) for tests/test_scale_out.py.
scale-out-setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x /usr/sbin/nginx ]; then
        echo "==> installing Debian's nginx-light for the scale-out test"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light \
            || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx
    fi

# --- Fuzzing (cargo-fuzz; not part of `just test`) ---

# Fuzz request parsing, chat templates and tensor decoding for SECONDS per target; crashes go to tests/out/fuzz/.
fuzz SECONDS="60":
    #!/usr/bin/env bash
    set -uo pipefail
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "==> installing cargo-fuzz"
        cargo install cargo-fuzz --locked || exit 1
    fi
    # libFuzzer builds need -Z flags (sanitizer, coverage); stable rustc takes them with RUSTC_BOOTSTRAP=1.
    export RUSTC_BOOTSTRAP=1
    out="$PWD/tests/out/fuzz"
    mkdir -p "$out"
    failed=()
    # fuzz CRATE_DIR TARGET [libFuzzer flags...]: corpus in CRATE_DIR/fuzz/corpus, committed seeds in fuzz/seeds.
    fuzz() {
        local dir=$1 target=$2; shift 2
        local dirs=("fuzz/corpus/$target")
        mkdir -p "$dir/fuzz/corpus/$target"
        [ -d "$dir/fuzz/seeds/$target" ] && dirs+=("fuzz/seeds/$target")
        echo "==> fuzzing $target ($dir) for {{SECONDS}} s"
        (cd "$dir" && cargo fuzz run "$target" "${dirs[@]}" -- \
            -max_total_time={{SECONDS}} -timeout=10 -max_len=4096 -print_final_stats=1 "$@") > "$out/$target.log" 2>&1
        local rc=$?
        grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$out/$target.log" | sed 's/^/    /'
        if [ $rc -ne 0 ]; then
            mkdir -p "$out/$target"
            cp "$dir/fuzz/artifacts/$target"/* "$out/$target/" 2>/dev/null
            echo "    FAILED (exit $rc): log $out/$target.log, inputs in $out/$target/"
            grep -E "^(thread '|==[0-9]+==ERROR|SUMMARY)" "$out/$target.log" | head -5 | sed 's/^/    /'
            failed+=("$target")
        fi
    }
    fuzz guests request_parsing -dict=fuzz/dicts/request.dict
    fuzz guests chat_template -dict=fuzz/dicts/jinja.dict -len_control=0
    fuzz host tensor_from_le_bytes -len_control=0
    fuzz host oip_to_tensor -dict=fuzz/dicts/oip.dict
    if [ ${#failed[@]} -gt 0 ]; then
        echo "fuzzing found crashes in: ${failed[*]}" >&2
        exit 1
    fi
    echo "no crashes; logs in $out"
