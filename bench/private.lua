-- wrk script for the recipient and merchant lookups: GET requests read from the file
-- given after `--`, one a line as PATH, a tab, then one header ("Name: value": the
-- request's own cookie, or the tenant's API key), cycled; each thread starts at its own
-- offset. Every 200 must be the view of the tier given as the second argument; other
-- views (a recipient cookie that no longer counts gives the public view) are counted
-- as `wrong`. `done` prints one machine-readable line for bench/lookup.py.

local requests = {}
local counter = 0
local threads = {}
local marker = nil
wrong = 0

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("offset", #threads * 7919)
end

function init(args)
  local path, tier = args[1], args[2]
  if path == nil or tier == nil then
    error("usage: wrk ... -s private.lua URL -- REQUESTS_FILE TIER")
  end
  marker = '"tier":"' .. tier .. '"'
  for line in io.lines(path) do
    local target, name, value = line:match("^([^\t]+)\t([^:]+): (.*)$")
    if target ~= nil then
      requests[#requests + 1] = wrk.format("GET", target, { [name] = value })
    elseif #line > 0 then
      error("not PATH<TAB>Name: value in " .. path)
    end
  end
  if #requests == 0 then
    error("no requests in " .. path)
  end
  counter = (offset or 0) % #requests
end

function request()
  counter = counter % #requests + 1
  return requests[counter]
end

function response(status, headers, body)
  if status == 200 and not string.find(body, marker, 1, true) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local wrong_views = 0
  for _, thread in ipairs(threads) do
    wrong_views = wrong_views + (thread:get("wrong") or 0)
  end
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "wrong=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    wrong_views, latency:percentile(50.0), latency:percentile(99.0)
  ))
end
