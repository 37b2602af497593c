-- GET /users with a mix of page sizes and cursors, as clients that page through the list ask for it: the limit is
-- one of 10, 20, 25, 50 or 100, and three requests in four follow a next-page cursor that an earlier answer
-- handed out (X-Next-Cursor), drawn at random from the last 1,000 seen. Pages asked for together are therefore
-- rarely identical, so sharing a page among identical requests (src/platform/lib/coalesce.ts) cannot hide the
-- per-request cost. Peers have no cursors; they ignore it and answer the first page of the same size, the same
-- number of rows. BENCH_HEADER as in the kit.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local headers = dofile(here .. "bench-header.lua")
local limits = { 10, 20, 25, 50, 100 }
local cursors, seen = {}, 0
request = function()
  local path = "/users?limit=" .. limits[math.random(#limits)]
  if seen > 0 and math.random(4) > 1 then
    path = path .. "&cursor=" .. cursors[math.random(math.min(seen, 1000))]
  end
  return wrk.format("GET", path, headers)
end
response = function(status, hdrs, body)
  local c = hdrs["X-Next-Cursor"] or hdrs["x-next-cursor"]
  if c then
    seen = seen + 1
    cursors[(seen - 1) % 1000 + 1] = c
  end
end
