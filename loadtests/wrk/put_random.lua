-- PUT /data/{id} (full replace) with id uniform in [1, MAX_ID] (env MAX_ID, default 1000).
local max_id = tonumber(os.getenv("MAX_ID") or "1000")
math.randomseed(os.time())
local n = 0

request = function()
  n = n + 1
  local body = string.format('{"name":"bench-%d","description":"updated by wrk","payload":{"n":%d}}', n, n)
  return wrk.format("PUT", "/data/" .. math.random(1, max_id), {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
