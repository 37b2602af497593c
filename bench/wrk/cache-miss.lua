-- GET /users/{id} with every id asked for once: the ids file BENCH_CACHE_IDS in order, from a random line, so a
-- cache never holds what is asked for (each wrk run, warm-up included, starts elsewhere). BENCH_HEADER as in the kit.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local headers = dofile(here .. "bench-header.lua")
local ids = {}
local f = assert(io.open(os.getenv("BENCH_CACHE_IDS") or "/tmp/bench-cache-ids.txt"))
for line in f:lines() do ids[#ids + 1] = line end
f:close()
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local i = math.random(#ids)
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/users/" .. ids[i], headers)
end
