#!/usr/bin/env bash
# A profile-guided release build of the gateway (rustc's -Cprofile-generate / -Cprofile-use):
#   1. an instrumented release build (target/pgo-gen),
#   2. training: bench/run.sh --smoke against it, every scenario (chat and stream, call log, proxy binding,
#      the WASM selector, Redis storage) at concurrency 1, 16 and 64; each gateway writes its counts on exit,
#   3. llvm-profdata merges them (the LLVM version rustc uses, from the Debian package llvm-N if missing),
#   4. the optimised release build (target/pgo/release/grok2api), with the plain mock beside it so
#      BENCH_BIN=target/pgo/release runs the benchmark against it.
#   bench/pgo.sh                  TRAIN_DURATION=2s per point
# Same code, same behaviour: only where the compiler puts the code and which branches it lays out straight
# changes. bench/README.md ("Seventeenth pass") has what it buys.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_DURATION=${TRAIN_DURATION:-2s}

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm" ] || { echo "cannot tell rustc's LLVM version" >&2; exit 1; }
PROFDATA=""
for p in "llvm-profdata-$llvm" "/usr/lib/llvm-$llvm/bin/llvm-profdata"; do
  command -v "$p" >/dev/null && PROFDATA=$p && break
done
if [ -z "$PROFDATA" ]; then
  # A profile from rustc's LLVM only reads with the same major version's llvm-profdata.
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing llvm-$llvm (llvm-profdata for rustc's LLVM $llvm)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "llvm-$llvm" >/dev/null
  PROFDATA=llvm-profdata-$llvm
fi

ROOT=$(pwd)
RAW=$ROOT/target/pgo-raw
echo "== instrumented build" >&2
# Its own target directory: RUSTFLAGS differ, and the plain release build stays as it is.
RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR=target/pgo-gen cargo build --release -q -p grok2api
# Build scripts and proc macros were instrumented too and wrote counts while building: only training's count.
rm -rf "$RAW"
mkdir -p "$RAW"
cargo build --release -q -p mock-upstream
MOCK=${CARGO_TARGET_DIR:-target}/release/mock-upstream
cp "$MOCK" target/pgo-gen/release/

echo "== training (bench/run.sh --smoke, $TRAIN_DURATION a point)" >&2
TRAIN_OUT=$(mktemp)
trap 'rm -f "$TRAIN_OUT"' EXIT
BENCH_BIN=target/pgo-gen/release BENCH_PROFILE=release DURATION=$TRAIN_DURATION OUT=$TRAIN_OUT bash bench/run.sh --smoke >/dev/null
ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "training wrote no profile (did the gateways exit cleanly?)" >&2; exit 1; }
"$PROFDATA" merge -o "$RAW/merged.profdata" "$RAW"/*.profraw

echo "== optimised build" >&2
RUSTFLAGS="-Cprofile-use=$RAW/merged.profdata" CARGO_TARGET_DIR=target/pgo cargo build --release -q -p grok2api
cp "$MOCK" target/pgo/release/
echo "target/pgo/release/grok2api"
