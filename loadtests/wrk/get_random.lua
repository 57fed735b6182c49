-- GET /data/{id} with id uniform in [1, MAX_ID] (env MAX_ID, default 1000).
-- Non-200 answers are counted and reported, so a wrong answer is not a success.
local max_id = tonumber(os.getenv("MAX_ID") or "1000")
local bad = 0
-- Optional pacing: each connection waits DELAY_MS between requests (offered load below saturation).
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
if delay_ms > 0 then
  delay = function() return delay_ms end
end
math.randomseed(os.time())

request = function()
  return wrk.format("GET", "/data/" .. math.random(1, max_id))
end

response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
