-- wrk script: GET /api/v1/track/{number}, cycling through the tracking numbers in
-- the file given after `--` (one a line); each thread starts at its own offset.
-- `done` prints one machine-readable line for bench/lookup.py.

local numbers = {}
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7919)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s track.lua URL -- NUMBERS_FILE")
  end
  for line in io.lines(path) do
    if #line > 0 then
      numbers[#numbers + 1] = line
    end
  end
  if #numbers == 0 then
    error("no tracking numbers in " .. path)
  end
  counter = (offset or 0) % #numbers
end

function request()
  counter = counter % #numbers + 1
  return wrk.format("GET", "/api/v1/track/" .. numbers[counter])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)
  ))
end
