-- GET /users?limit=100 where every request reads alone: a request that carries its own deadline
-- (X-Request-Timeout) is never shared with others asking for the same page (src/db/postgres/users.ts),
-- so this measures Spate's per-request cost of the list, as the peers pay it. BENCH_HEADER as in the kit.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local headers = dofile(here .. "bench-header.lua")
headers["X-Request-Timeout"] = "30"
request = function()
  return wrk.format("GET", "/users?limit=100", headers)
end
