#!/usr/bin/env bash
# Load benchmark: the gateway against calling the mock upstream directly, measured in one run.
#   bench/run.sh            full run (DURATION=10s per point, REPEAT=3, median reported)
#   bench/run.sh --smoke    a few seconds per point; checks only that every scenario completes with zero errors
# Needs wrk (Debian package `wrk`; installed here when missing). Results: a table on stdout and JSON lines in
# bench/results.jsonl (git-ignored). With 2 cores, the load tool runs on core 0 and the processes under test on
# core 1 (taskset), so they do not steal each other's time.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
DURATION=${DURATION:-$([ $SMOKE = 1 ] && echo 2s || echo 10s)}
REPEAT=${REPEAT:-$([ $SMOKE = 1 ] && echo 1 || echo 3)}
TOKENS=${TOKENS:-10}
export API_KEY=${API_KEY:-bench-client-key}
OUT=${OUT:-bench/results.jsonl}

if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null
fi
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then LOAD_CPU="taskset -c 0"; SUT_CPU="taskset -c 1"; else LOAD_CPU=""; SUT_CPU=""; fi

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

# A ~300-byte chat request answered with ~1 KB; and a 20-chunk stream.
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
base = {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}
open(f"{w}/chat.json", "w").write(json.dumps(base))
s = dict(base, stream=True, mock={"chunks": 20})
open(f"{w}/stream.json", "w").write(json.dumps(s))
PY

# start_gateway NAME EXTRA_GLOBAL_TOML -> sets GW_PORT, GW_PID
start_gateway() {
  local dir="$WORK/gw-$1"; mkdir -p "$dir"
  GW_PORT=$(free_port)
  python3 - "$dir" "$TOKENS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
rec = {"createdTime": 0, "remainingQueries": -1, "heavyremainingQueries": -1, "status": "active", "failedCount": 0,
       "tags": [], "note": ""}
json.dump({"ssoNormal": {f"bench-token-{i:04d}-xxxxxxxx": rec for i in range(n)}, "ssoSuper": {}}, open(f"{d}/token.json", "w"))
PY
  printf '[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n[global]\nhost = "127.0.0.1"\nadmin_password = "bench-pw"\n%s\n' \
    "$MOCK_PORT" "$2" >"$dir/setting.toml"
  DATA_DIR="$dir" PORT="$GW_PORT" LOG_LEVEL=warning WORKERS=1 $SUT_CPU $BIN/grok2api >"$dir/log" 2>&1 &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_http "http://127.0.0.1:$GW_PORT/health"
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_peak_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }

# point TARGET_NAME URL BODY CONC PID -> prints the median-rps run's JSON
point() {
  local name=$1 url=$2 body=$3 conc=$4 pid=$5
  local runs=()
  for _ in $(seq 1 "$REPEAT"); do
    local t0; t0=$(cpu_ticks "$pid")
    local line
    line=$(BODY_FILE="$body" $LOAD_CPU wrk -t1 -c"$conc" -d"$DURATION" -s bench/post.lua "$url" | grep '^RESULT ' | cut -d' ' -f2-)
    local t1; t1=$(cpu_ticks "$pid")
    local reqs; reqs=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['requests'])" "$line")
    local cpu_us; cpu_us=$(python3 -c "import os,sys; t=int(sys.argv[1]); r=int(sys.argv[2]); print(round(t*1e6/os.sysconf('SC_CLK_TCK')/max(r,1),1))" "$(( t1 - t0 ))" "$reqs")
    runs+=("$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['cpu_us_per_req']=float(sys.argv[2]); print(json.dumps(d))" "$line" "$cpu_us")")
  done
  python3 - "$name" "$conc" "$(rss_peak_kb "$pid")" "${runs[@]}" <<'PY'
import json, sys
name, conc, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(r) for r in sys.argv[4:]]
med = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
med.update(scenario=name, concurrency=conc, peak_rss_kb=rss, repeats=len(runs),
           errors=sum(r["errors"] for r in runs))
print(json.dumps(med))
PY
}

: >"$WORK/results"
record() { echo "$1" | tee -a "$WORK/results" >>"$OUT"; }

start_gateway bare "log_max_count = 0"
BARE_PID=$GW_PID; BARE_PORT=$GW_PORT
start_gateway calllog ""
LOG_PID=$GW_PID; LOG_PORT=$GW_PORT
MOCK_PID=${PIDS[0]}

for kind in chat stream; do
  for conc in 1 16 64; do
    record "$(point "direct/$kind" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "$WORK/$kind.json" "$conc" "$MOCK_PID")"
    record "$(point "gateway/$kind" "http://127.0.0.1:$BARE_PORT/v1/chat/completions" "$WORK/$kind.json" "$conc" "$BARE_PID")"
    record "$(point "gateway+calllog/$kind" "http://127.0.0.1:$LOG_PORT/v1/chat/completions" "$WORK/$kind.json" "$conc" "$LOG_PID")"
  done
done

python3 - "$WORK/results" "$SMOKE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
smoke = sys.argv[2] == "1"
print(f"{'scenario':28} {'conc':>4} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} {'err':>4} {'cpu µs/req':>10} {'peak RSS MB':>11}")
for r in rows:
    print(f"{r['scenario']:28} {r['concurrency']:>4} {r['rps']:>9.0f} {r['p50_us']:>8} {r['p99_us']:>8} {r['p999_us']:>9} {r['errors']:>4} {r['cpu_us_per_req']:>10} {r['peak_rss_kb']/1024:>11.1f}")
by = {(r["scenario"], r["concurrency"]): r for r in rows}
print()
for kind in ("chat", "stream"):
    d, g, l = by[(f"direct/{kind}", 1)], by[(f"gateway/{kind}", 1)], by[(f"gateway+calllog/{kind}", 1)]
    print(f"{kind}: added latency at c=1 vs direct: p50 {g['p50_us']-d['p50_us']} µs, p99 {g['p99_us']-d['p99_us']} µs"
          f" (with call log: p50 {l['p50_us']-d['p50_us']} µs, p99 {l['p99_us']-d['p99_us']} µs)")
    d64, g64, l64 = by[(f"direct/{kind}", 64)], by[(f"gateway/{kind}", 64)], by[(f"gateway+calllog/{kind}", 64)]
    print(f"{kind}: c=64 added p50 {g64['p50_us']-d64['p50_us']} µs, p99 {g64['p99_us']-d64['p99_us']} µs; "
          f"throughput call log on/off = {l64['rps']/g64['rps']:.3f}")
errors = sum(r["errors"] for r in rows)
if errors:
    print(f"FAIL: {errors} errors"); sys.exit(1)
print("all scenarios completed with zero errors")
PY
