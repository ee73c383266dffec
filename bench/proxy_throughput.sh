#!/usr/bin/env bash
# Gateway throughput through a local HTTP proxy (tinyproxy) against the same proxy used directly by the load
# tool (wrk sends absolute-form requests to the proxy). Needs wrk and tinyproxy (apt-get install wrk
# tinyproxy-bin). Usage: bench/proxy_throughput.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
cargo build --release -q -p grok2api -p mock-upstream
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] && cp "$tmp/gw.log" "$KEEP"; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

mock=$(port); proxy=$(port); gw=$(port)
target/release/mock-upstream --port "$mock" >/dev/null & pids+=($!)
printf 'Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 1024\nLogLevel Error\nDisableViaHeader Yes\n' "$proxy" >"$tmp/tp.conf"
tinyproxy -d -c "$tmp/tp.conf" >/dev/null 2>&1 & pids+=($!)
mkdir -p "$tmp/data"
printf '[grok]\nbase_url = "http://127.0.0.1:%s/v1"\nproxy_urls = ["http://127.0.0.1:%s"]\n[global]\nhost = "127.0.0.1"\nlog_level = "WARNING"\n' \
  "$mock" "$proxy" >"$tmp/data/setting.toml"
printf '{"ssoNormal": {"bench-token-1": {}, "bench-token-2": {}, "bench-token-3": {}, "bench-token-4": {}}}' >"$tmp/data/token.json"
DATA_DIR="$tmp/data" PORT="$gw" target/release/grok2api >"$tmp/gw.log" 2>&1 & pids+=($!)
wait_port "$mock"; wait_port "$proxy"; wait_port "$gw"

body='{"model":"grok-4-fast","messages":[{"role":"user","content":"hello"}]}'
cat >"$tmp/direct.lua" <<LUA
wrk.method = "POST"
wrk.path = "http://127.0.0.1:$mock/v1/chat/completions"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token-1"
LUA
cat >"$tmp/gateway.lua" <<LUA
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
echo "== wrk -> tinyproxy -> mock (the proxy used directly)"
wrk -t2 -c"$conns" -d"${secs}s" -s "$tmp/direct.lua" "http://127.0.0.1:$proxy" | tee "$tmp/direct.txt"
echo "== wrk -> grok2api -> tinyproxy -> mock"
wrk -t2 -c"$conns" -d"${secs}s" -s "$tmp/gateway.lua" "http://127.0.0.1:$gw" | tee "$tmp/gateway.txt"
d=$(awk '/Requests\/sec/ {print $2}' "$tmp/direct.txt")
g=$(awk '/Requests\/sec/ {print $2}' "$tmp/gateway.txt")
python3 -c "print(f'ratio gateway/direct: {float($g)/float($d):.2f}  ({float($g):.0f} vs {float($d):.0f} req/s)')"
