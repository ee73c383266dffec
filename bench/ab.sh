#!/usr/bin/env bash
# Wall-clock A/B of two gateway binaries side by side against one mock (bare forwarding, call log off).
#   bench/ab.sh OLD_BINARY NEW_BINARY
# Both gateways (WORKERS=1) and the mock run on core 1, wrk on core 0, as in bench/run.sh; each round drives
# A then B then B then A (so drift hits both alike) at each of CONCS for DURATION, for KINDS (chat, stream).
# Prints req/s per run and the median per binary, then the gateway's CPU time per request (user + system, from
# /proc) per run and its median: on a shared machine req/s moves with the neighbours, CPU per request much less.
# Env: CONCS (64), DURATION (3s), ROUNDS (3), KINDS; PROXY=squid or PROXY=socks sends both gateways' upstream
# traffic through one squid (bench/squid.sh) or microsocks on core 1, as gateway+proxy and gateway+socks in
# run.sh (NPROXY addresses of that squid, default 1; run.sh uses 20). SELECTOR=least-latency loads that plugin (target/plugins/NAME.wasm,
# plugins/build.sh's output, as scripts/test builds it) as both gateways' proxy selector.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
CONCS=${CONCS:-64}
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-3}
KINDS=${KINDS:-chat stream}
cargo build --release -q -p mock-upstream
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export API_KEY=bench-client-key

MP=$(free_port)
taskset -c 1 target/release/mock-upstream --host 127.0.0.1 --port "$MP" >/dev/null 2>&1 &
PIDS+=($!)
EXTRA=""
case "${PROXY:-}" in
  "") ;;
  squid)
    # shellcheck source=bench/squid.sh
    . bench/squid.sh
    PXP=$(free_port); mkdir -p "$W/squid"
    squid_conf "$W/squid" "$PXP" "${NPROXY:-1}" >"$W/squid/squid.conf"
    squid_prepare "$W" "$W/squid"
    taskset -c 1 "$(command -v squid || echo /usr/sbin/squid)" -N -f "$W/squid/squid.conf" >"$W/squid/out.log" 2>&1 &
    PIDS+=($!)
    urls=$(for i in $(seq 1 "${NPROXY:-1}"); do printf '"http://127.0.0.%s:%s", ' "$i" "$PXP"; done)
    EXTRA="proxy_urls = [${urls%, }]"
    ;;
  socks)
    PXP=$(free_port)
    taskset -c 1 microsocks -i 127.0.0.1 -p "$PXP" >/dev/null 2>&1 &
    PIDS+=($!)
    EXTRA="proxy_url = \"socks5h://127.0.0.1:$PXP\""
    ;;
  *) echo "PROXY: squid or socks" >&2; exit 2 ;;
esac
if [ -n "$EXTRA" ]; then
  for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PXP") 2>/dev/null && break; sleep 0.1; done
fi
declare -A PORT GWPID
for side in A B; do
  PORT[$side]=$(free_port)
  mkdir -p "$W/$side"
  printf '[global]\nhost = "127.0.0.1"\nadmin_password = "pw"\nlog_max_count = 0\n[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n%s\n' \
    "$MP" "$EXTRA" >"$W/$side/setting.toml"
  if [ -n "${SELECTOR:-}" ]; then
    mkdir -p "$W/$side/plugins"
    cp "target/plugins/$SELECTOR.wasm" "$W/$side/plugins/"
    printf '[plugins]\ndir = "%s"\nselector = "%s"\n' "$W/$side/plugins" "$SELECTOR" >>"$W/$side/setting.toml"
  fi
  bin=$A; [ "$side" = B ] && bin=$B
  DATA_DIR="$W/$side" PORT="${PORT[$side]}" LOG_LEVEL=warning WORKERS=1 taskset -c 1 "$bin" >"$W/$side.log" 2>&1 &
  PIDS+=($!)
  GWPID[$side]=$!
  for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:${PORT[$side]}/health" && break; sleep 0.1; done
  python3 bench/measure.py provision --url "http://127.0.0.1:${PORT[$side]}" --password pw --tokens 10 >/dev/null
done
python3 - "$W" <<'PY'
import json, sys
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
base = {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}
open(f"{sys.argv[1]}/chat.json", "w").write(json.dumps(base))
open(f"{sys.argv[1]}/stream.json", "w").write(json.dumps(dict(base, stream=True, mock={"chunks": 20})))
PY
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system CPU, in clock ticks
TCK=$(getconf CLK_TCK)
load() { # side kind conc duration -> "req/s cpu-µs-per-request"
  local t0 t1 out
  t0=$(ticks "${GWPID[$1]}")
  out=$(BODY_FILE="$W/$2.json" taskset -c 0 wrk -t1 -c"$3" -d"$4" -s bench/post.lua \
    "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" | grep '^RESULT' | sed 's/^RESULT //')
  t1=$(ticks "${GWPID[$1]}")
  echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); t=(int(sys.argv[2])-int(sys.argv[1]))/int(sys.argv[3])
print(round(r["rps"]), round(t*1e6/max(r["requests"],1),1))
if r["errors"]: print(r["errors"], "errors", file=sys.stderr)' "$t0" "$t1" "$TCK"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for kind in $KINDS; do
  for c in $CONCS; do
    load A "$kind" "$c" 1s >/dev/null; load B "$kind" "$c" 1s >/dev/null # warm pools
    ra=""; rb=""; ca=""; cb=""
    for _ in $(seq 1 "$ROUNDS"); do
      for side in A B B A; do
        read -r v cpu < <(load "$side" "$kind" "$c" "$DURATION")
        if [ "$side" = A ]; then ra="$ra $v"; ca="$ca $cpu"; else rb="$rb $v"; cb="$cb $cpu"; fi
      done
    done
    printf '%-6s c=%-3s A (%s) req/s:%s  median %s\n' "$kind" "$c" "$(basename "$A")" "$ra" "$(echo "$ra" | median)"
    printf '%-6s c=%-3s B (%s) req/s:%s  median %s\n' "$kind" "$c" "$(basename "$B")" "$rb" "$(echo "$rb" | median)"
    printf '%-6s c=%-3s A (%s) cpu µs/req:%s  median %s\n' "$kind" "$c" "$(basename "$A")" "$ca" "$(echo "$ca" | median)"
    printf '%-6s c=%-3s B (%s) cpu µs/req:%s  median %s\n' "$kind" "$c" "$(basename "$B")" "$cb" "$(echo "$cb" | median)"
  done
done
