-- GET /users/{id} over a hot working set: ids drawn from a Zipf distribution (s = 1) over the first BENCH_ZIPF_N
-- (100,000) lines of the ids file BENCH_CACHE_IDS, rank 1 the most asked for. With BENCH_MIX=1, a mix of what a
-- client of the API sends: 90% reads by id as above, 8% list pages (limit 10, 20 or 50, first page), 2% PATCHes of
-- a user drawn the same way (each one invalidating that user and every list page). BENCH_HEADER as in the kit.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local headers = dofile(here .. "bench-header.lua")
local ids = {}
local n = tonumber(os.getenv("BENCH_ZIPF_N") or "100000")
local f = assert(io.open(os.getenv("BENCH_CACHE_IDS") or "/tmp/bench-cache-ids.txt"))
for line in f:lines() do
  ids[#ids + 1] = line
  if #ids >= n then break end
end
f:close()
n = #ids
local cdf, sum = {}, 0
for i = 1, n do
  sum = sum + 1 / i
  cdf[i] = sum
end
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local function zipf()
  local x = math.random() * sum
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < x then lo = mid + 1 else hi = mid end
  end
  return ids[lo]
end
local mix = os.getenv("BENCH_MIX") == "1"
local limits = { 10, 20, 50 }
local patchHeaders = {}
for k, v in pairs(headers) do patchHeaders[k] = v end
patchHeaders["Content-Type"] = "application/json"
request = function()
  if mix then
    local r = math.random(100)
    if r <= 8 then return wrk.format("GET", "/users?limit=" .. limits[math.random(#limits)], headers) end
    if r <= 10 then return wrk.format("PATCH", "/users/" .. zipf(), patchHeaders, '{"age":' .. (18 + math.random(60)) .. '}') end
  end
  return wrk.format("GET", "/users/" .. zipf(), headers)
end
