-- wrk script: POSTs BODY_FILE's contents as JSON and prints one JSON line of results at the end.
-- TARGET_PATH, when set, replaces the request path: an absolute URI makes the request line proxy-style
-- ("POST http://host:port/v1/... HTTP/1.1"), so wrk can go through an HTTP forward proxy.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local target = os.getenv("TARGET_PATH")
if target and target ~= "" then
  wrk.path = target
end
-- The mock wants a credential; the gateway ignores it when its api_key is empty.
if os.getenv("API_KEY") and os.getenv("API_KEY") ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
end

-- No response() callback: defining one makes wrk parse every response body in Lua, which slows the load
-- tool down. Statuses >= 400 are counted by wrk itself (summary.errors.status).
-- EXPECT_CLOSE=1 (wrk straight to tinyproxy): tinyproxy closes the connection after every answer without
-- saying "Connection: close", so wrk meets EOF on its next read and counts a read error once per completed
-- request. Only read errors beyond the completed requests are real (a cut answer has no completed request).
local expect_close = os.getenv("EXPECT_CLOSE") == "1"

function done(summary, latency, requests)
  local e = summary.errors
  local read = e.read
  if expect_close then read = math.max(0, e.read - summary.requests) end
  local errors = e.connect + read + e.write + e.timeout + e.status
  io.write(string.format(
    'RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_us":%d,"p99_us":%d,"p999_us":%d,"errors":%d,'
      .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,"err_status":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors,
    e.connect, e.read, e.write, e.timeout, e.status))
end
