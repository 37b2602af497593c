-- GET /users?limit=100 where every request reads alone: a request that carries its own deadline
-- (X-Request-Timeout) is never shared with others asking for the same page (src/storage/postgres/users.ts),
-- so this measures Spate's per-request cost of the list, as the peers pay it. BENCH_HEADER as in the kit.
local headers = { ["X-Request-Timeout"] = "30" }
local raw = os.getenv("BENCH_HEADER")
if raw and raw ~= "" then
  local name, value = raw:match("^%s*([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end
request = function()
  return wrk.format("GET", "/users?limit=100", headers)
end
