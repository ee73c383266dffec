#!/usr/bin/env bash
# What the mock upstream spends per chat request for each of two request heads: the one nginx forwards in
# run.sh (wrk's headers, Host rewritten) and the one the gateway sends (its own Host, a pool token, its
# User-Agent and Accept: see upstream::Outbound::encode_h1). wrk sends each head straight to the mock (wrk on
# core 0, the mock alone on core 1), alternately, ROUNDS times for DURATION; the mock's CPU per request comes
# from /proc. In run.sh the mock shares core 1 with the process under test, so the gap between the two heads is
# part of the gateway / nginx ratio there (bench/README.md, sixteenth pass).
#   bench/upstream_cost.sh        DURATION=4s ROUNDS=3 CONC=64; BENCH_BIN=DIR uses DIR/mock-upstream
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-4s}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-64}
command -v wrk >/dev/null || { echo "needs wrk (Debian package)" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else cargo build --release -q -p mock-upstream; BIN=target/release; fi
if [ "$(nproc)" -ge 2 ]; then LOAD_CPU="taskset -c 0"; SUT_CPU="taskset -c 1"; else LOAD_CPU=""; SUT_CPU=""; fi
W=$(mktemp -d)
MOCK=""
cleanup() { [ -n "$MOCK" ] && kill "$MOCK" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
MP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$SUT_CPU "$BIN/mock-upstream" --host 127.0.0.1 --port "$MP" >/dev/null 2>&1 &
MOCK=$!
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$MP/" && break
  sleep 0.1
done
# The body run.sh's chat scenario sends.
python3 - "$W/chat.json" <<'PY'
import json, sys
msg = "Summarise the following text in one line: " + "lorem ipsum dolor sit amet " * 8
body = {"model": "grok-4-fast", "messages": [{"role": "user", "content": msg}], "mock": {"size": 1024}}
open(sys.argv[1], "w").write(json.dumps(body))
PY
lua_head() { # NAME then header lines "Name=value"
  local name=$1; shift
  {
    echo 'local f = assert(io.open(os.getenv("BODY_FILE"), "rb")); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()'
    for h in "$@"; do echo "wrk.headers[\"${h%%=*}\"] = \"${h#*=}\""; done
  } >"$W/$name.lua"
}
lua_head nginx "Host=mock" "Content-Type=application/json" "Authorization=Bearer bench-client-key"
lua_head gateway "host=127.0.0.1:$MP" "authorization=Bearer bench-token-00000-xxxxxxxxxxxxxxxxxxxxxxxx" \
  "user-agent=grok2api/0.1.0" "accept=application/json" "content-type=application/json"
cpu() { awk '{print $14 + $15}' "/proc/$MOCK/stat"; }
declare -A per
for _ in $(seq 1 "$ROUNDS"); do
  for head in nginx gateway; do
    t0=$(cpu)
    n=$(BODY_FILE="$W/chat.json" $LOAD_CPU wrk -t1 -c"$CONC" -d"$DURATION" -s "$W/$head.lua" \
      "http://127.0.0.1:$MP/v1/chat/completions" | awk '/requests in/ {print $1}')
    t1=$(cpu)
    us=$(python3 -c "print('%.2f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / $n))")
    per[$head]="${per[$head]:-} $us"
    echo "$head head: $n requests, mock CPU $us µs a request"
  done
done
python3 - "${per[nginx]}" "${per[gateway]}" <<'PY'
import statistics, sys
a, b = (statistics.median(float(x) for x in s.split()) for s in sys.argv[1:3])
print(f"median mock CPU a request: nginx's head {a:.2f} µs, the gateway's {b:.2f} µs ({b / a:.3f}x)")
PY
