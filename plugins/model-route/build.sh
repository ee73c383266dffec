#!/usr/bin/env bash
# Builds model-route.wasm with jco's QuickJS path (componentize-qjs): small, compiles in under a second.
#   plugins/model-route/build.sh [OUT.wasm]
# Installs the pinned npm packages from package-lock.json first (npm ci) when they are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/model-route.wasm}"
cd "$here"
if [ ! -x node_modules/.bin/componentize-qjs ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-qjs -w ../../wit -j model-route.js -n proxy-selector --sync --stub-wasi -o "$out"
