#!/usr/bin/env bash
# Load benchmark: the gateway against calling the mock upstream directly and against nginx, measured in one run.
#   bench/run.sh                  full run (release build; DURATION=5s per point, REPEAT=3, medians reported)
#   bench/run.sh --smoke          CI: 1 s per point, once; checks only that every scenario completes, zero errors
#   bench/run.sh --soak [MINUTES] constant load on one gateway (default 10 min), RSS every 10 s, growth per minute
# Env: DURATION, REPEAT, WARMUP, CONCS ("1 16 64"), ONLY (scenario names), TOKENS (10), OUT (bench/results.jsonl),
# BENCH_PROFILE (release|dev), BENCH_PROXY (squid|tinyproxy), NPROXY (20 proxy addresses), SOAK_TARGET (gateway+all),
# SOAK_CONC (8 per kind), SOAK_SCRAPE (1: scrape /metrics every 10 s).
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
MINUTES=10
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --soak) MODE=soak; MINUTES=${2:-10} ;;
  "") ;;
  *) echo "usage: bench/run.sh [--smoke | --soak [MINUTES]]" >&2; exit 2 ;;
esac
if [ $MODE = smoke ]; then
  DURATION=${DURATION:-1s}; REPEAT=${REPEAT:-1}; WARMUP=${WARMUP:-}
  # The smoke test only checks for errors, so the dev build that `cargo test` already made will do.
  PROFILE=${BENCH_PROFILE:-dev}
else
  DURATION=${DURATION:-5s}; REPEAT=${REPEAT:-3}; WARMUP=${WARMUP:-1s}
  PROFILE=${BENCH_PROFILE:-release}
fi
CONCS=${CONCS:-1 16 64}
TOKENS=${TOKENS:-10}
# The HTTP forward proxy of the proxy scenarios. squid keeps connections alive both ways, as a real egress proxy
# does; tinyproxy closes every connection after one answer, so it, not the gateway, sets the pace (README).
BENCH_PROXY=${BENCH_PROXY:-squid}
case "$BENCH_PROXY" in squid | tinyproxy) ;; *) echo "BENCH_PROXY must be squid or tinyproxy" >&2; exit 2 ;; esac
# How many proxies the gateway's pool holds in the proxy scenarios (the selector's candidates): one forward
# proxy listening on 127.0.0.1 … 127.0.0.NPROXY, the same port, each address a separate pool entry.
NPROXY=${NPROXY:-20}
OUT=${OUT:-bench/results.jsonl}
# Clients send this key; the gateway reads API_KEY from the environment, so its auth check runs too.
export API_KEY=bench-client-key
ADMIN_PW=bench-admin-pw

# ---- tools -----------------------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "$BENCH_PROXY" = squid ]; then
  command -v squid >/dev/null || [ -x /usr/sbin/squid ] || need+=(squid)
else
  command -v tinyproxy >/dev/null || need+=(tinyproxy-bin)
fi
command -v microsocks >/dev/null || need+=(microsocks)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]}" >&2
  $sudo apt-get update -qq
  # policy-rc.d or no init system: the packages' own services are not started.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
SQUID=$(command -v squid || echo /usr/sbin/squid)
# shellcheck source=bench/squid.sh
. bench/squid.sh

# With 2 cores or more the load tool (and this script's helpers) run on core 0 and everything under test
# (gateway, nginx, the forward proxies, redis, mock) on core 1, so the load tool never steals the server's time.
if [ "$(nproc)" -ge 2 ]; then
  LOAD_CPU="taskset -c 0"; SUT_CPU="taskset -c 1"
  PINNING="load tool on core 0, processes under test (and the mock) on core 1"
else
  LOAD_CPU=""; SUT_CPU=""; PINNING="one core: no pinning, load tool and servers share it"
fi

# ---- build -----------------------------------------------------------------------------------------------------
if [ -n "${BENCH_BIN:-}" ]; then
  # Binaries someone already built (scripts/test passes cargo test's), so the smoke run adds no second build.
  BIN=$BENCH_BIN
  for b in grok2api mock-upstream; do
    [ -x "$BIN/$b" ] || { echo "BENCH_BIN=$BIN has no $b" >&2; exit 1; }
  done
elif [ "$PROFILE" = release ]; then
  cargo build --release -q -p grok2api -p mock-upstream; BIN=target/release
else
  cargo build -q -p grok2api -p mock-upstream; BIN=target/debug
fi

# The WASM selector: only when this tree has the plugin sources (plugin host merged) and the target is there.
WASM=""
WASM_WHY="no plugins/least-latency in this tree"
if [ -d plugins/least-latency ]; then
  # GROK2API_PLUGINS_DIR: prebuilt components (plugins/build.sh's output), as for `cargo bench --bench plugins`.
  for f in ${GROK2API_PLUGINS_DIR:+"$GROK2API_PLUGINS_DIR/least-latency.wasm"} target/plugins/least-latency.wasm \
    target/wasm/wasm32-wasip2/release/least_latency.wasm; do
    [ -f "$f" ] && WASM=$f && break
  done
  if [ -z "$WASM" ]; then
    if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
      (cd plugins && CARGO_TARGET_DIR=../target/wasm cargo build -q --locked --release --target wasm32-wasip2 \
        -p least-latency) && WASM=target/wasm/wasm32-wasip2/release/least_latency.wasm
    else
      WASM_WHY="rustup target wasm32-wasip2 is not installed"
    fi
  fi
fi

# ---- processes -------------------------------------------------------------------------------------------------
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
RESULTS=$WORK/results.jsonl
M() { $LOAD_CPU python3 bench/measure.py "$@"; }
record() { tee -a "$RESULTS" >>"$OUT"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_up URL PID: 0 once URL answers, 1 if PID died first
wait_up() {
  for _ in $(seq 1 300); do # 30 s: a WASM plugin is compiled at start-up
    kill -0 "$2" 2>/dev/null || return 1
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2; return 1
}

python3 - "$RUN_ID" "$MODE" "$PROFILE" "$PINNING" "$DURATION" "$REPEAT" "$BENCH_PROXY" "$NPROXY" <<'PY' | record
import json, os, sys
r, mode, prof, pin, dur, rep, proxy, nproxy = sys.argv[1:]
print(json.dumps({"type": "meta", "run_id": r, "mode": mode, "profile": prof, "pinning": pin, "duration": dur,
                  "repeat": int(rep), "nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                  "forward_proxy": proxy, "proxies": int(nproxy)}))
PY

# Request bodies: ~300-byte chat request answered with ~1 KB; the same request streamed as 20 chunks.
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
base = {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}
open(f"{w}/chat.json", "w").write(json.dumps(base))
open(f"{w}/stream.json", "w").write(json.dumps(dict(base, stream=True, mock={"chunks": 20})))
# Chunk latency: 1 ms apart, so each chunk travels alone; the mock stamps each as it sends it.
open(f"{w}/stamp.json", "w").write(json.dumps(dict(base, stream=True, mock={"chunks": 20, "delay_ms": 1, "stamp": True})))
PY

MOCK_PORT=$(free_port)
$SUT_CPU $BIN/mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_up "http://127.0.0.1:$MOCK_PORT/__mock/stats" "$MOCK_PID"
MOCK_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"

# nginx as the reference reverse proxy (bench/nginx.sh).
# shellcheck source=bench/nginx.sh
. bench/nginx.sh
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
nginx_conf "$WORK/nginx" "$MOCK_PORT" "$NGINX_PORT" >"$WORK/nginx/nginx.conf"
$SUT_CPU "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
wait_up "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"

# The forward proxy both the gateway and wrk go through in the proxy scenarios, listening on NPROXY loopback
# addresses (127.0.0.1 … 127.0.0.NPROXY, one port), so the gateway's pool has NPROXY distinct proxies.
PX_PORT=$(free_port)
PX_DIR="$WORK/$BENCH_PROXY"; mkdir -p "$PX_DIR"
if [ "$BENCH_PROXY" = squid ]; then
  # -N: foreground, one process, no SMP workers (config: bench/squid.sh).
  squid_conf "$PX_DIR" "$PX_PORT" "$NPROXY" >"$PX_DIR/squid.conf"
  squid_prepare "$WORK" "$PX_DIR"
  $SUT_CPU "$SQUID" -N -f "$PX_DIR/squid.conf" >"$PX_DIR/out.log" 2>&1 &
else
  { printf 'Port %s\nTimeout 60\nMaxClients 1024\nLogLevel Error\nDisableViaHeader Yes\n' "$PX_PORT"
    for i in $(seq 1 "$NPROXY"); do echo "Listen 127.0.0.$i"; done; } >"$PX_DIR/tinyproxy.conf"
  $SUT_CPU tinyproxy -d -c "$PX_DIR/tinyproxy.conf" >"$PX_DIR/out.log" 2>&1 &
fi
PX_PID=$!; PIDS+=("$PX_PID")
wait_up "http://127.0.0.1:$PX_PORT/" "$PX_PID" || { cat "$PX_DIR"/*.log >&2; exit 1; }
PROXY_URLS=$(for i in $(seq 1 "$NPROXY"); do printf '"http://127.0.0.%s:%s", ' "$i" "$PX_PORT"; done)
PROXY="proxy_urls = [${PROXY_URLS%, }]"

# SOCKS5 (microsocks, one thread per connection): a tunnel stays open for as many requests as the gateway's
# pooled connection carries. One address; wrk cannot speak SOCKS, so there is no wrk-through-it reference.
SOCKS_PORT=$(free_port)
$SUT_CPU microsocks -i 127.0.0.1 -p "$SOCKS_PORT" >"$WORK/microsocks.log" 2>&1 &
SOCKS_PID=$!; PIDS+=("$SOCKS_PID")
for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$SOCKS_PORT") 2>/dev/null && break; sleep 0.1; done

# start_gateway NAME GLOBAL_TOML GROK_TOML EXTRA_TOML [ENV=VAL...] -> GW_PORT, GW_PID; 1 if it does not start
start_gateway() {
  local name=$1 global=$2 grok=$3 extra=$4; shift 4
  local dir="$WORK/gw-$name"; mkdir -p "$dir"
  GW_PORT=$(free_port)
  printf '[global]\nhost = "127.0.0.1"\nadmin_password = "%s"\n%s\n[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n%s\n%s\n' \
    "$ADMIN_PW" "$global" "$MOCK_PORT" "$grok" "$extra" >"$dir/setting.toml"
  # WORKERS=1: one tokio worker thread, as nginx gets one worker process; both have core 1 only.
  env "$@" DATA_DIR="$dir" PORT="$GW_PORT" LOG_LEVEL=warning WORKERS=1 $SUT_CPU $BIN/grok2api >"$dir/log" 2>&1 &
  GW_PID=$!; PIDS+=("$GW_PID")
  wait_up "http://127.0.0.1:$GW_PORT/health" "$GW_PID" || return 1
  M provision --url "http://127.0.0.1:$GW_PORT" --password "$ADMIN_PW" --tokens "$TOKENS"
}

# Scenario table: name, URL, pid under test, absolute target path (proxy-direct only).
NAMES=(); URLS=(); SPIDS=(); TPATHS=()
add() { NAMES+=("$1"); URLS+=("$2"); SPIDS+=("$3"); TPATHS+=("${4:-}"); }
skip() { M skip --run-id "$RUN_ID" --name "$1" --reason "$2" | record; }
# Gateways whose proxy pool (and selector plugin, if any) are checked after the load: NAME=URL[=PLUGIN].
CHECKS=()

add direct "$MOCK_URL" "$MOCK_PID"
add nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$NGINX_PID"
add proxy-direct "http://127.0.0.1:$PX_PORT/" "$PX_PID" "$MOCK_URL"

start_gateway bare "log_max_count = 0" "" ""
add gateway "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
start_gateway calllog "" "" ""
add gateway+calllog "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
# Proxy binding with the built-in selector: NPROXY proxies, call log off.
start_gateway proxy "log_max_count = 0" "$PROXY" ""
add gateway+proxy "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
CHECKS+=("gateway+proxy=http://127.0.0.1:$GW_PORT=")

# The WASM selector `least-latency` when this build has a plugin host: gateway+proxy+wasm is gateway+proxy with
# it (call log off), so the two isolate the selector; gateway+all adds the call log.
WASM_EXTRA=""
if [ -n "$WASM" ]; then
  mkdir -p "$WORK/plugins"; cp "$WASM" "$WORK/plugins/least-latency.wasm"
  WASM_EXTRA=$(printf '[plugins]\ndir = "%s"\nselector = "least-latency"\n' "$WORK/plugins")
  start_gateway proxy-wasm "log_max_count = 0" "$PROXY" "$WASM_EXTRA"
  if grep -q 'unknown section \[plugins\]' "$WORK/gw-proxy-wasm/log"; then
    WASM=""; WASM_WHY="the binary ignores [plugins]"
  else
    add gateway+proxy+wasm "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
    CHECKS+=("gateway+proxy+wasm=http://127.0.0.1:$GW_PORT=least-latency")
  fi
fi
if [ -z "$WASM" ]; then
  skip "WASM selector" "not available in this build ($WASM_WHY); no gateway+proxy+wasm, gateway+all = call log + proxy binding only"
fi

# SOCKS5 egress through microsocks (one proxy), call log off.
start_gateway socks "log_max_count = 0" "proxy_urls = [\"socks5h://127.0.0.1:$SOCKS_PORT\"]" ""
add gateway+socks "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
CHECKS+=("gateway+socks=http://127.0.0.1:$GW_PORT=")

# Everything on: call log + proxy binding + the WASM selector.
start_gateway all "" "$PROXY" "$WASM_EXTRA"
add gateway+all "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
CHECKS+=("gateway+all=http://127.0.0.1:$GW_PORT=${WASM:+least-latency}")

# Redis storage mode (call log on): a private redis-server; skipped when the binary refuses STORAGE_MODE=redis.
REDIS_PORT=$(free_port)
$SUT_CPU redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" \
  >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
if start_gateway redis "" "" "" STORAGE_MODE=redis DATABASE_URL="redis://127.0.0.1:$REDIS_PORT/0" 2>/dev/null; then
  add gateway+redis "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GW_PID"
else
  why=$(grep -v '^\s*$' "$WORK/gw-redis/log" | tail -1 | cut -c1-160)
  skip "gateway+redis" "not available in this build (${why:-did not start})"
fi

for i in "${!NAMES[@]}"; do
  M idle --run-id "$RUN_ID" --name "${NAMES[$i]}" --pids "${SPIDS[$i]}" | record
done

echo "bench: $MODE, $PROFILE build, $PINNING; run $RUN_ID" >&2
# ONLY="direct nginx gateway" limits the load points to those scenarios (quick A/Bs); default: all.
wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
if [ $MODE = soak ]; then
  target=${SOAK_TARGET:-gateway+all}
  for i in "${!NAMES[@]}"; do
    [ "${NAMES[$i]}" = "$target" ] || continue
    echo "soak: $target for $MINUTES min, chat + stream at concurrency ${SOAK_CONC:-8} each" >&2
    # SOAK_SCRAPE=1 scrapes /metrics every 10 s, as a Prometheus server would (it drains histogram samples).
    scrape=""
    [ "${SOAK_SCRAPE:-0}" = 1 ] && scrape="--scrape ${URLS[$i]%/v1/chat/completions}/metrics"
    M soak --run-id "$RUN_ID" --name "$target" --url "${URLS[$i]}" --pids "${SPIDS[$i]}" \
      --chat "$WORK/chat.json" --stream "$WORK/stream.json" --minutes "$MINUTES" --conc "${SOAK_CONC:-8}" \
      --script bench/post.lua --load-cpu "$LOAD_CPU" $scrape | record
  done
else
  for kind in chat stream; do
    for conc in $CONCS; do
      for i in "${!NAMES[@]}"; do
        wanted "${NAMES[$i]}" || continue
        echo "running: $kind c=$conc ${NAMES[$i]}" >&2
        # wrk straight to tinyproxy: it closes after every answer (post.lua's EXPECT_CLOSE).
        close=""; [ -n "${TPATHS[$i]}" ] && [ "$BENCH_PROXY" = tinyproxy ] && close=--expect-close
        M point --run-id "$RUN_ID" --name "${NAMES[$i]}" --kind "$kind" --conc "$conc" --url "${URLS[$i]}" \
          --target-path "${TPATHS[$i]}" $close --body "$WORK/$kind.json" --pids "${SPIDS[$i]}" --mock-pids "$MOCK_PID" \
          --duration "$DURATION" --repeat "$REPEAT" --warmup "$WARMUP" --script bench/post.lua \
          --load-cpu "$LOAD_CPU" | record
      done
    done
  done
  # After the load: each proxy gateway's pool (how many proxies, how many carried requests) and its selector
  # plugin's counters, so the report shows the selector really ran (plugin errors count as errors).
  for c in "${CHECKS[@]}"; do
    IFS== read -r name url plugin <<<"$c"
    wanted "$name" || continue # not loaded in this run: its selector never ran
    M check --run-id "$RUN_ID" --name "$name" --url "$url" --password "$ADMIN_PW" --plugin "$plugin" | record
  done
  # Time from the mock sending a chunk to the client reading it, at c=1; the proxy scenarios are left out.
  for i in "${!NAMES[@]}"; do
    case "${NAMES[$i]}" in direct | nginx | gateway | gateway+calllog) ;; *) continue ;; esac
    wanted "${NAMES[$i]}" || continue
    echo "running: chunk latency ${NAMES[$i]}" >&2
    M chunklat --run-id "$RUN_ID" --name "${NAMES[$i]}" --url "${URLS[$i]}" --body "$WORK/stamp.json" \
      --seconds "${DURATION%s}" | record
  done
fi

echo "$PINNING; $PROFILE build; medians of $REPEAT × $DURATION; results appended to $OUT (run $RUN_ID)"
python3 bench/measure.py report --results "$RESULTS" $([ $MODE = smoke ] && echo --smoke)
