#!/usr/bin/env bash
# Builds text-pool.wasm with componentize-py (pinned in requirements.txt).
#   plugins/text-pool/build.sh [OUT.wasm]
# PYTHON selects the interpreter whose environment has componentize-py (default: the repository's .venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/text-pool.wasm}"
py="${PYTHON:-$here/../../.venv/bin/python}"
if ! "$py" -c 'import componentize_py' 2>/dev/null; then
  "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
cd "$here"
"$(dirname "$py")/componentize-py" -d ../../wit -w pool-parser componentize app -o "$out"
