#!/usr/bin/env bash
# Throughput of STORAGE_MODE=redis against STORAGE_MODE=file, in one run: the same gateway binary, mock
# upstream and wrk load, the two modes measured alternately (REPEAT rounds of DURATION each) and the medians
# compared. Target: redis ≥ 0.9 × file (the request path reads local snapshots only; Redis sees batched
# deltas, binding claims and call-log appends off the path).
#   bench/storage_modes.sh            DURATION=10s, REPEAT=3
#   bench/storage_modes.sh --smoke    2 s, one round; checks only that both modes answer without errors
# Needs wrk and redis-server (Debian packages; installed when missing). Redis runs from its binary on a free
# loopback port with a temp data dir, never as the system service.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
DURATION=${DURATION:-$([ $SMOKE = 1 ] && echo 2s || echo 10s)}
REPEAT=${REPEAT:-$([ $SMOKE = 1 ] && echo 1 || echo 3)}
CONC=${CONC:-32}
TOKENS=${TOKENS:-10}
export API_KEY=${API_KEY:-bench-client-key}

for bin in wrk redis-server; do
  if ! command -v "$bin" >/dev/null; then
    pkg=$bin; sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
  fi
done
if [ "$(nproc)" -ge 2 ]; then LOAD_CPU="taskset -c 0"; SUT_CPU="taskset -c 1"; else LOAD_CPU=""; SUT_CPU=""; fi

cargo build --release -q -p grok2api -p mock-upstream
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

MOCK_PORT=$(free_port)
$SUT_CPU $BIN/mock-upstream --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/__mock/stats"

REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
# Redis shares the load core: it is part of the system under test here.
$SUT_CPU redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" --appendonly yes \
  --appendfsync everysec --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
open(f"{w}/chat.json", "w").write(json.dumps(
    {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}))
PY

# start_gateway NAME [ENV...] -> GW_PORT
start_gateway() {
  local name=$1; shift
  local dir="$WORK/gw-$name"; mkdir -p "$dir"
  GW_PORT=$(free_port)
  python3 - "$dir" "$TOKENS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
rec = {"createdTime": 0, "remainingQueries": -1, "heavyremainingQueries": -1, "status": "active", "failedCount": 0,
       "tags": [], "note": ""}
json.dump({"ssoNormal": {f"bench-token-{i:04d}-xxxxxxxx": rec for i in range(n)}, "ssoSuper": {}}, open(f"{d}/token.json", "w"))
PY
  printf '[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n[global]\nhost = "127.0.0.1"\nadmin_password = "bench-pw"\n' \
    "$MOCK_PORT" >"$dir/setting.toml"
  env DATA_DIR="$dir" PORT="$GW_PORT" LOG_LEVEL=warning WORKERS=1 "$@" $SUT_CPU $BIN/grok2api >"$dir/log" 2>&1 &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_http "http://127.0.0.1:$GW_PORT/health"
}

start_gateway file
FILE_PORT=$GW_PORT
FILE_PID=$GW_PID
start_gateway redis STORAGE_MODE=redis DATABASE_URL="redis://127.0.0.1:$REDIS_PORT/0"
REDIS_GW_PORT=$GW_PORT
REDIS_GW_PID=$GW_PID

# CPU time (user + system, clock ticks) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run PORT GATEWAY_PID: one wrk run, its RESULT JSON plus the CPU the gateway and redis-server used in it.
run() {
  local g0 r0 out
  g0=$(ticks "$2"); r0=$(ticks "$REDIS_PID")
  out=$(BODY_FILE="$WORK/chat.json" $LOAD_CPU wrk -t1 -c"$CONC" -d"$DURATION" -s bench/post.lua \
    "http://127.0.0.1:$1/v1/chat/completions" | grep '^RESULT ' | cut -d' ' -f2-)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["gw_ticks"]=int(sys.argv[2]); r["redis_ticks"]=int(sys.argv[3]); print(json.dumps(r))' \
    "$out" "$(( $(ticks "$2") - g0 ))" "$(( $(ticks "$REDIS_PID") - r0 ))"
}

: >"$WORK/file.jsonl"; : >"$WORK/redis.jsonl"
for _ in $(seq 1 "$REPEAT"); do
  run "$FILE_PORT" "$FILE_PID" >>"$WORK/file.jsonl"
  run "$REDIS_GW_PORT" "$REDIS_GW_PID" >>"$WORK/redis.jsonl"
done

python3 - "$WORK" "$SMOKE" <<'PY'
import json, statistics, sys
w, smoke = sys.argv[1], sys.argv[2] == "1"
res = {}
for mode in ("file", "redis"):
    runs = [json.loads(l) for l in open(f"{w}/{mode}.jsonl")]
    errors = sum(r["errors"] for r in runs)
    if errors:
        sys.exit(f"{mode}: {errors} errors")
    res[mode] = runs
    med = statistics.median(r["rps"] for r in runs)
    p99 = statistics.median(r["p99_us"] for r in runs)
    tick_us = 1e6 / 100  # USER_HZ
    gw = statistics.median(r["gw_ticks"] * tick_us / r["requests"] for r in runs)
    rd = statistics.median(r["redis_ticks"] * tick_us / r["requests"] for r in runs)
    print(f"{mode:6s} median {med:9.0f} req/s   p99 {p99/1000:6.2f} ms   CPU per request: gateway {gw:5.1f} µs, "
          f"redis-server {rd:5.1f} µs   runs: {[round(r['rps']) for r in runs]}")
ratio = statistics.median(r["rps"] for r in res["redis"]) / statistics.median(r["rps"] for r in res["file"])
print(f"redis / file = {ratio:.3f} (target >= 0.9)")
if not smoke and ratio < 0.9:
    sys.exit(1)
PY
# Every request of the redis run reached the shared call log (give the writer a tick).
sleep 1.5
echo "call-log entries in Redis: $(redis-cli -p "$REDIS_PORT" XLEN grok2api:log)"
