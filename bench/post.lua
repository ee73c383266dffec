-- wrk script: POSTs BODY_FILE's contents as JSON and prints one JSON line of results at the end.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
-- The mock wants a credential; the gateway ignores it when its api_key is empty.
if os.getenv("API_KEY") and os.getenv("API_KEY") ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
end

local non2xx = 0
function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  io.write(string.format(
    'RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_us":%d,"p99_us":%d,"p999_us":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors))
end
