#!/usr/bin/env bash
# `GET /api/logs` latency with STORAGE_MODE=mysql at ROWS call-log entries (default 1 000 000): a private
# MariaDB (own data dir, free loopback port) is filled with generated rows in bulk (INSERT ... SELECT over a
# recursive CTE, 100 000 rows a statement), a gateway with `log_max_count = ROWS` starts on it and tails them
# into its local replica (the time it takes is printed), then each query is timed CALLS times with curl and
# the median printed: the first page, and filters by token, model, success and a time range. The same
# queries are also timed in MariaDB itself (SHOW PROFILES), to show what the indexes give a server-side query.
#   bench/mysql_logs.sh             ROWS=1000000, CALLS=7
#   bench/mysql_logs.sh --smoke     ROWS=2000, CALLS=2: checks only that every query answers
#   PROFILE=debug bench/mysql_logs.sh   use the dev build instead of building a release
# Needs mariadb-server (a Debian package; installed when missing). Never touches the system service.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
ROWS=${ROWS:-$([ $SMOKE = 1 ] && echo 2000 || echo 1000000)}
CALLS=${CALLS:-$([ $SMOKE = 1 ] && echo 2 || echo 7)}
PROFILE=${PROFILE:-release}

if ! [ -x /usr/sbin/mariadbd ] && ! command -v mariadbd >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server >/dev/null
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

if [ "$PROFILE" = release ]; then
  cargo build --release -q -p grok2api -p mock-upstream
else
  cargo build -q -p grok2api -p mock-upstream
fi
BIN=target/$PROFILE
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

ROOT_USER=()
[ "$(id -u)" -eq 0 ] && ROOT_USER=(--user=root)
DB_PORT=$(free_port)
mariadb-install-db --no-defaults --datadir="$WORK/db" --auth-root-authentication-method=normal --skip-test-db \
  --innodb-log-file-size=64M "${ROOT_USER[@]}" >"$WORK/install.log" 2>&1
"$MARIADBD" --no-defaults --datadir="$WORK/db" --socket="$WORK/db.sock" --pid-file="$WORK/db.pid" \
  --log-error="$WORK/db.err" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
  --innodb-log-file-size=64M --innodb-buffer-pool-size=512M "${ROOT_USER[@]}" >/dev/null 2>&1 &
PIDS+=($!)
sql() { mariadb --no-defaults -h127.0.0.1 -P"$DB_PORT" -uroot -N -B "$@"; }
for _ in $(seq 1 300); do sql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
sql -e "CREATE DATABASE grok2api; CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench-pw';
        GRANT ALL ON grok2api.* TO 'bench'@'127.0.0.1';"
DATABASE_URL="mysql://bench:bench-pw@127.0.0.1:$DB_PORT/grok2api"

MOCK_PORT=$(free_port)
$BIN/mock-upstream --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/__mock/stats"

# start_gateway -> GW_PORT, GW_PID
start_gateway() {
  GW_PORT=$(free_port)
  mkdir -p "$WORK/gw"
  printf '[grok]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key = "bench-key"\n[global]\nhost = "127.0.0.1"\nadmin_password = "bench-pw"\nlog_max_count = %s\n' \
    "$MOCK_PORT" "$ROWS" >"$WORK/gw/setting.toml"
  env DATA_DIR="$WORK/gw" PORT="$GW_PORT" LOG_LEVEL=warning STORAGE_MODE=mysql DATABASE_URL="$DATABASE_URL" \
    $BIN/grok2api >>"$WORK/gw/log" 2>&1 &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_http "http://127.0.0.1:$GW_PORT/health"
}

# The first start creates the schema (migrations); then the table is filled behind the gateway's back.
start_gateway
kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true

BASE=1700000000000
echo "filling $ROWS call-log rows..."
t0=$(date +%s.%N)
done_rows=0
while [ "$done_rows" -lt "$ROWS" ]; do
  n=$(( ROWS - done_rows < 100000 ? ROWS - done_rows : 100000 ))
  # 50 tokens, 4 models, every 10th call failed (429), one call a second.
  sql grok2api -e "SET SESSION max_recursive_iterations = 1000000;
    INSERT INTO g2a_call_logs (entry_id, ts, token_id, model, success, status_code, entry)
    WITH RECURSIVE s (n) AS (SELECT $done_rows + 1 UNION ALL SELECT n + 1 FROM s WHERE n < $done_rows + $n)
    SELECT CONCAT('bench-', n), $BASE + n * 1000, CONCAT('tok', LPAD(n % 50, 9, '0')),
           ELT(1 + n % 4, 'grok-4', 'grok-4-fast', 'grok-3', 'grok-3-mini'), n % 10 <> 0, IF(n % 10 <> 0, 200, 429),
           CONCAT('{\"id\":\"bench-', n, '\",\"timestamp\":', $BASE + n * 1000, ',\"sso\":\"tok***', n % 50,
                  '\",\"model\":\"', ELT(1 + n % 4, 'grok-4', 'grok-4-fast', 'grok-3', 'grok-3-mini'),
                  '\",\"success\":', IF(n % 10 <> 0, 'true', 'false'), ',\"status_code\":', IF(n % 10 <> 0, 200, 429),
                  ',\"response_time\":0.25,\"token_id\":\"tok', LPAD(n % 50, 9, '0'), '\",\"route\":\"/v1/chat/completions\"}')
    FROM s;"
  done_rows=$(( done_rows + n ))
done
t1=$(date +%s.%N)
printf 'filled %s rows in %.1f s\n' "$(sql grok2api -e 'SELECT COUNT(*) FROM g2a_call_logs')" "$(echo "$t1 - $t0" | bc)"

start_gateway
TOKEN=$(curl -fs "http://127.0.0.1:$GW_PORT/api/login" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"bench-pw"}' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("token") or d["data"]["token"])')
t0=$(date +%s.%N)
for _ in $(seq 1 3000); do
  total=$(curl -fs "http://127.0.0.1:$GW_PORT/api/logs?page_size=1" -H "authorization: Bearer $TOKEN" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
  [ "$total" -ge "$ROWS" ] && break
  sleep 0.2
done
t1=$(date +%s.%N)
[ "$total" -ge "$ROWS" ] || { echo "replica holds only $total of $ROWS rows" >&2; exit 1; }
printf 'gateway replica loaded %s rows in %.1f s (RSS %s MB)\n' "$total" "$(echo "$t1 - $t0" | bc)" \
  "$(( $(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status") / 1024 ))"

MID=$(( BASE + ROWS * 500 ))
QUERIES=(
  "first page|page=1&page_size=50"
  "token|token_id=tok000000007&page_size=50"
  "model|model=grok-3&page_size=50"
  "success=false|success=false&page_size=50"
  "time range (1 h)|start_time=$MID&end_time=$(( MID + 3600000 ))&page_size=50"
  "token+model+failed|token_id=tok000000010&model=grok-3&success=false&page_size=50"
)
echo
echo "GET /api/logs at $ROWS rows, median of $CALLS calls:"
for q in "${QUERIES[@]}"; do
  name=${q%%|*}; params=${q#*|}
  times=()
  for _ in $(seq 1 "$CALLS"); do
    times+=("$(curl -fs -o "$WORK/answer.json" -w '%{time_total}' "http://127.0.0.1:$GW_PORT/api/logs?$params" \
      -H "authorization: Bearer $TOKEN")")
  done
  python3 - "$name" "$WORK/answer.json" "${times[@]}" <<'PY'
import json, statistics, sys
name, answer, times = sys.argv[1], sys.argv[2], [float(t) for t in sys.argv[3:]]
a = json.load(open(answer))
assert a.get("success") is not False and len(a["data"]) > 0, a
print(f"  {name:22s} {statistics.median(times) * 1000:8.1f} ms   total {a['total']}")
PY
done

# The same filters as SQL on the indexed columns (page + count), timed by the server.
echo
echo "the same queries in MariaDB (indexes on ts, token_id, model, success), median of $CALLS:"
SQLS=(
  "first page|SELECT entry FROM g2a_call_logs ORDER BY ts DESC LIMIT 50; SELECT COUNT(*) FROM g2a_call_logs"
  "token|SELECT entry FROM g2a_call_logs WHERE token_id = 'tok000000007' ORDER BY ts DESC LIMIT 50; SELECT COUNT(*) FROM g2a_call_logs WHERE token_id = 'tok000000007'"
  "model|SELECT entry FROM g2a_call_logs WHERE model = 'grok-3' ORDER BY ts DESC LIMIT 50; SELECT COUNT(*) FROM g2a_call_logs WHERE model = 'grok-3'"
  "success=false|SELECT entry FROM g2a_call_logs WHERE success = 0 ORDER BY ts DESC LIMIT 50; SELECT COUNT(*) FROM g2a_call_logs WHERE success = 0"
  "time range (1 h)|SELECT entry FROM g2a_call_logs WHERE ts BETWEEN $MID AND $(( MID + 3600000 )) ORDER BY ts DESC LIMIT 50; SELECT COUNT(*) FROM g2a_call_logs WHERE ts BETWEEN $MID AND $(( MID + 3600000 ))"
)
for q in "${SQLS[@]}"; do
  name=${q%%|*}; stmts=${q#*|}
  script="SET profiling = 1;"
  for _ in $(seq 1 "$CALLS"); do script="$script $stmts;"; done
  script="$script SHOW PROFILES;"
  # Each call = its page query plus its count query.
  sql grok2api -e "$script" | awk -F'\t' 'NF == 3 && $1 ~ /^[0-9]+$/ {print $2}' >"$WORK/prof.txt"
  python3 - "$name" "$WORK/prof.txt" <<'PY'
import statistics, sys
name, path = sys.argv[1], sys.argv[2]
d = [float(x) for x in open(path).read().split()]
calls = [d[i] + d[i + 1] for i in range(0, len(d) - 1, 2)]
print(f"  {name:22s} {statistics.median(calls) * 1000:8.1f} ms")
PY
done
