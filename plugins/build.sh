#!/usr/bin/env bash
# Builds every example plugin and sandbox test guest from source into one directory of components:
#   plugins/build.sh [OUT_DIR]      (default: target/plugins in the repository root)
# Rust crates build for wasm32-wasip2 (one `cargo build -p` each, so the SDK gets one world feature);
# model-route (JavaScript) with jco's componentize-qjs; text-pool (Python) with componentize-py.
# Needs: rustup target wasm32-wasip2; node + npm; python3 with componentize-py (PYTHON=... selects it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/target/plugins}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# A target directory of its own, so this build never waits on the host build's lock.
export CARGO_TARGET_DIR="${PLUGINS_TARGET_DIR:-$root/target/wasm}"

for pkg in least-latency json-pool chat-webhook tg-sandbox tg-bad-import tg-no-world; do
  (cd "$here" && cargo build --quiet --locked --release --target wasm32-wasip2 -p "$pkg")
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${pkg//-/_}.wasm" "$out/$pkg.wasm"
done

bash "$here/model-route/build.sh" "$out/model-route.wasm"
bash "$here/text-pool/build.sh" "$out/text-pool.wasm"
ls -l "$out"
