-- GET /data?limit=LIMIT&after=<random id in [0, MAX_ID]> (env MAX_ID, default 1000; LIMIT 50).
-- Counts and reports like get_random.lua, whose response and done it reuses (run from the
-- repository's root, as the scripts in loadtests/wrk do).
dofile("loadtests/wrk/get_random.lua")
local max_id = tonumber(os.getenv("MAX_ID") or "1000")
local limit = tonumber(os.getenv("LIMIT") or "50")

request = function()
  return wrk.format("GET", "/data?limit=" .. limit .. "&after=" .. math.random(0, max_id))
end
