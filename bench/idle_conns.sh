#!/usr/bin/env bash
# RSS of a gateway holding N idle keep-alive client connections, each after one chat request: what an open
# but quiet connection costs (its task, read and write buffers).
#   bench/idle_conns.sh [BIN_DIR]      (default target/release; builds it when missing)
# Env: N (connections, default 1500; needs that many open files, up to the hard limit).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release}
N=${N:-1500}
[ -x "$BIN/grok2api" ] || cargo build --release -q -p grok2api -p mock-upstream
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ulimit -n "$(ulimit -Hn)"
MP=$(free_port); GP=$(free_port)
"$BIN/mock-upstream" --host 127.0.0.1 --port "$MP" >/dev/null 2>&1 &
PIDS+=($!)
mkdir -p "$W/gw"
# A long header timeout: the connections must stay open while they are counted.
printf '[global]\nhost = "127.0.0.1"\nadmin_password = "pw"\nlog_max_count = 0\nheader_read_timeout = 300\n[grok]\nbase_url = "http://127.0.0.1:%s/v1"\n' \
  "$MP" >"$W/gw/setting.toml"
DATA_DIR="$W/gw" PORT="$GP" LOG_LEVEL=warning WORKERS=1 "$BIN/grok2api" >"$W/gw.log" 2>&1 &
GW=$!
PIDS+=("$GW")
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GP/health" && break; sleep 0.1; done
python3 bench/measure.py provision --url "http://127.0.0.1:$GP" --password pw --tokens 10 >/dev/null
echo "before: $(awk '/VmRSS/ {print $2}' "/proc/$GW/status") kB"
python3 - "$GP" "$N" "$GW" <<'PY'
import json, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
port, n, gw = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.dumps({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}]}).encode()
req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(body), body)
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
for s in socks:
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
def rss():
    return [l for l in open(f"/proc/{gw}/status") if l.startswith("VmRSS")][0].split()[1]
time.sleep(1)
print(f"{n} idle keep-alive connections after one chat each: {rss()} kB")
# A connection idle for a second lets its handler's slot go (server::conn, KEEP_SLOT).
time.sleep(2)
print(f"the same, 3 s after their answers: {rss()} kB")
PY
