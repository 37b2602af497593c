-- The request headers every script of this directory sends: BENCH_HEADER ("Name: value", as in the shared kit's
-- scripts), or none. Loaded with dofile from the scripts' own directory (`here` below).
local headers = {}
local raw = os.getenv("BENCH_HEADER")
if raw and raw ~= "" then
  local name, value = raw:match("^%s*([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end
return headers
