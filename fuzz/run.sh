#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 30) each, starting from the corpus kept in fuzz/corpus/.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${FUZZ_SECONDS:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
for t in proxy_url pool_answer settings calllog_file sse_scanner upstream_h1 server_head; do
  echo "== fuzz $t (${SECS}s)"
  # New inputs found go to a scratch dir; the kept corpus only changes by hand.
  mkdir -p "../target/fuzz-corpus/$t"
  if ! cargo fuzz run "$t" "../target/fuzz-corpus/$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 \
      >"../target/fuzz-$t.log" 2>&1; then
    tail -40 "../target/fuzz-$t.log"
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t"
    exit 1
  fi
  tail -2 "../target/fuzz-$t.log"
done
