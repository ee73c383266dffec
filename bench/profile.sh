#!/usr/bin/env bash
# Where the gateway spends its CPU per request, independent of machine noise where possible.
#   bench/profile.sh [chat|stream] [callgrind|perf|syscalls]     (defaults: chat callgrind)
# callgrind: user-space instructions per request (exact, repeatable) and the top functions, self and inclusive.
# perf:      cpu-clock samples (kernel included) of the gateway under wrk at concurrency 16; needs linux-perf.
# syscalls:  strace -c of the gateway under load, with the request count to divide by.
# Env: LOGMAX (call log entries, default 0 = off), PROXY=1 (egress through a local squid, as gateway+proxy in
# run.sh; PROXY=socks: through microsocks), BENCH_BIN (directory of prebuilt grok2api and mock-upstream),
# SECS (measured seconds, default 10), CONC (connections: callgrind default 1, syscalls 16), TOKENS (pool size, default 10), KEEP (dir for the raw profile),
# NPROXY (squid addresses in the pool with PROXY=1, default 1; run.sh uses 20), SELECTOR (a plugin in target/plugins
# loaded as the proxy selector, e.g. least-latency), SUBJECT=nginx (profile the reference nginx of run.sh, one worker
# and no master process, instead of the gateway: its instructions and misses are the floor to compare with),
# CACHE=1 (callgrind only: simulate the caches and branch predictor too, and print misses per request).
# Release build, gateway with WORKERS=1 on core 1, wrk on core 0, as in bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-chat}
TOOL=${2:-callgrind}
SECS=${SECS:-10}
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else
  cargo build --release -q -p grok2api -p mock-upstream
  BIN=target/release
fi
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export API_KEY=bench-client-key

MP=$(free_port); GP=$(free_port)
taskset -c 1 $BIN/mock-upstream --host 127.0.0.1 --port "$MP" >/dev/null 2>&1 &
PIDS+=($!)
mkdir -p "$W/gw"
printf '[global]\nhost = "127.0.0.1"\nadmin_password = "pw"\nlog_max_count = %s\n[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n' \
  "${LOGMAX:-0}" "$MP" >"$W/gw/setting.toml"
case "${PROXY:-0}" in
  0) ;;
  socks)
    TP=$(free_port)
    taskset -c 1 microsocks -i 127.0.0.1 -p "$TP" >/dev/null 2>&1 &
    PIDS+=($!)
    printf 'proxy_url = "socks5h://127.0.0.1:%s"\n' "$TP" >>"$W/gw/setting.toml"
    ;;
  *) # squid, configured as in run.sh (bench/squid.sh), one address
    # shellcheck source=bench/squid.sh
    . bench/squid.sh
    TP=$(free_port); mkdir -p "$W/squid"
    squid_conf "$W/squid" "$TP" "${NPROXY:-1}" >"$W/squid/squid.conf"
    squid_prepare "$W" "$W/squid"
    taskset -c 1 "$(command -v squid || echo /usr/sbin/squid)" -N -f "$W/squid/squid.conf" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$TP") 2>/dev/null && break; sleep 0.1; done
    urls=$(for i in $(seq 1 "${NPROXY:-1}"); do printf '"http://127.0.0.%s:%s", ' "$i" "$TP"; done)
    printf 'proxy_urls = [%s]\n' "${urls%, }" >>"$W/gw/setting.toml"
    ;;
esac
if [ -n "${SELECTOR:-}" ]; then
  mkdir -p "$W/plugins"
  cp "target/plugins/$SELECTOR.wasm" "$W/plugins/"
  printf '[plugins]\ndir = "%s"\nselector = "%s"\n' "$W/plugins" "$SELECTOR" >>"$W/gw/setting.toml"
fi
WRAP=(taskset -c 1)
if [ "$TOOL" = callgrind ]; then
  WRAP+=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.out")
  [ "${CACHE:-0}" = 1 ] && WRAP+=(--cache-sim=yes --branch-sim=yes)
fi
if [ "${SUBJECT:-gateway}" = nginx ]; then
  # As in run.sh, but without a master process, so the profiled process is the one serving.
  # shellcheck source=bench/nginx.sh
  . bench/nginx.sh
  mkdir -p "$W/nginx/logs"
  nginx_conf "$W/nginx" "$MP" "$GP" off >"$W/nginx/nginx.conf"
  "${WRAP[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$W/nginx" -c "$W/nginx/nginx.conf" >"$W/gw.log" 2>&1 &
  GW=$!; PIDS+=("$GW")
  for _ in $(seq 1 1200); do curl -s -o /dev/null "http://127.0.0.1:$GP/" && break; sleep 0.1; done
else
  DATA_DIR="$W/gw" PORT="$GP" LOG_LEVEL=warning WORKERS=1 "${WRAP[@]}" $BIN/grok2api >"$W/gw.log" 2>&1 &
  GW=$!; PIDS+=("$GW")
  for _ in $(seq 1 1200); do curl -s -o /dev/null "http://127.0.0.1:$GP/health" && break; sleep 0.1; done # valgrind starts slowly
  python3 bench/measure.py provision --url "http://127.0.0.1:$GP" --password pw --tokens "${TOKENS:-10}"
fi
python3 - "$W" <<'PY'
import json, sys
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
base = {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}
open(f"{sys.argv[1]}/chat.json", "w").write(json.dumps(base))
open(f"{sys.argv[1]}/stream.json", "w").write(json.dumps(dict(base, stream=True, mock={"chunks": 20})))
PY
load() { BODY_FILE="$W/$KIND.json" taskset -c 0 wrk -t1 -c"$1" -d"$2" -s bench/post.lua \
  "http://127.0.0.1:$GP/v1/chat/completions" | grep '^RESULT' | grep -o '"requests":[0-9]*' | cut -d: -f2; }

load 4 2s >/dev/null # warm the connection pools
case "$TOOL" in
  callgrind)
    callgrind_control -i on "$GW" >/dev/null
    load "${CONC:-1}" 2s >/dev/null
    callgrind_control -z "$GW" >/dev/null
    n=$(load "${CONC:-1}" "${SECS}s")
    callgrind_control -d "$GW" >/dev/null
    out=$(ls "$W"/cg.out.* | tail -1)
    # Kept before the report: `head` closing a pipe below ends the script (pipefail) before the end.
    if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP"/; fi
    total=$(callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    echo "$KIND: $n requests, $((total / n)) user-space instructions per request (${SUBJECT:-gateway}, call log max ${LOGMAX:-0})"
    if [ "${CACHE:-0}" = 1 ]; then
      # Columns of the totals line: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim, each with its share.
      callgrind_annotate "$out" 2>/dev/null | awk -v n="$n" '/PROGRAM TOTALS/ {
        for (i = 1; i <= NF; i++) { gsub(",", "", $i); v[i] = $i }
        printf "per request: I1 misses %.0f, D1 misses %.0f read + %.0f write, LL misses %.1f, mispredicted branches %.0f + %.0f indirect\n",
          v[7]/n, v[9]/n, v[11]/n, (v[13]+v[15]+v[17])/n, v[21]/n, v[25]/n }'
    fi
    echo "-- self"; callgrind_annotate "$out" --inclusive=no | sed -n '/file:function/,$p' | sed -n '3,25p' | cut -c1-150
    echo "-- inclusive (gateway functions)"
    callgrind_annotate "$out" --inclusive=yes | grep 'grok2api::' | head -20 | cut -c1-150
    ;;
  perf)
    perf record -q -e cpu-clock -F 2000 -p "$GW" -o "$W/perf.data" -- sleep "$((SECS + 1))" &
    PERF=$!
    sleep 0.5
    n=$(load 16 "${SECS}s")
    wait "$PERF" || true
    echo "$KIND: $n requests in ${SECS}s"
    # `head` closes the pipe early; under pipefail that would end the script before KEEP's copy.
    perf report -i "$W/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep '%' | head -5 || true
    perf report -i "$W/perf.data" --stdio --no-children --sort symbol 2>/dev/null | grep '%' | sed 's/  */ /g' |
      cut -c1-150 | head -30 || true
    ;;
  syscalls)
    timeout -s INT "$((SECS + 2))" strace -c -f -p "$GW" -o "$W/strace.txt" &
    ST=$!
    sleep 0.5
    n=$(load "${CONC:-16}" "${SECS}s")
    wait "$ST" || true
    echo "$KIND: $n requests; syscalls (divide calls by the requests):"
    head -15 "$W/strace.txt"
    ;;
  *) echo "unknown tool $TOOL" >&2; exit 2 ;;
esac
if [ -n "${KEEP:-}" ]; then cp "$W"/perf.data "$W"/strace.txt "$KEEP"/ 2>/dev/null || true; fi
