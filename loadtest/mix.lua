-- wrk script of the load test (loadtest/run_load.py runs it): a fixed mix of
-- SQLAlchemy and Django ORM reads and writes against the demo's /load/ endpoints.
--
--   LOAD_RUN  a word unique to this run; write keys are LOAD_RUN-<thread>-<n>
--   LOAD_OUT  the file done() writes, one record per line:
--               acked <kind> <key>                   a write answered 2xx
--               failed <kind> <key>                  a write answered otherwise
--               ok <kind> <decisecond> <count>       2xx responses in that 0.1 s
--               err <kind> <status> <decisecond> <count>
--               latency <p50 us> <p99 us> <mean us> <max us>
--               summary <requests> <duration us> <connect> <read> <write> <status> <timeout>
--
-- Time is the wall clock in tenths of a second (gettimeofday through LuaJIT's
-- FFI: os.time() has whole seconds only), so the driver can line responses up
-- with the moment it restarted the database.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_usec; } load_timeval;
int gettimeofday(load_timeval *tv, void *tz);
]])
local tv = ffi.new("load_timeval")

local function decisecond()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 10 + math.floor(tonumber(tv.tv_usec) / 100000)
end

-- Out of 10 requests: 3 reads and 2 writes on each side.
local MIX = {
  "sa-read", "orm-read", "sa-write", "orm-read", "sa-read",
  "orm-write", "sa-read", "orm-read", "sa-write", "orm-write",
}
local PATHS = {
  ["sa-read"] = "/load/sa/recent",
  ["orm-read"] = "/load/orm/recent",
  ["sa-write"] = "/load/sa/communications",
  ["orm-write"] = "/load/orm/communications",
}

-- Main state only: every thread, so done() can collect what each recorded.
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Thread state: each thread has its own Lua state, so these are per thread.
local run, sent = "", 0
-- Tables, not strings, so thread:get() can copy them to the main state.
acked, failed, ok, err = {}, {}, {}, {}

function init(args)
  run = (os.getenv("LOAD_RUN") or "load") .. "-" .. id
end

function request()
  sent = sent + 1
  local kind = MIX[(sent - 1) % #MIX + 1]
  if kind == "sa-write" or kind == "orm-write" then
    local body = "key=" .. run .. "-" .. sent
    return wrk.format("POST", PATHS[kind], {
      ["Content-Type"] = "application/x-www-form-urlencoded",
    }, body)
  end
  return wrk.format("GET", PATHS[kind])
end

local function bump(counts, name)
  counts[name] = (counts[name] or 0) + 1
end

function response(status, headers, body)
  -- A response the view did not write (a 500 from a failed commit) has no kind.
  local kind = headers["X-Load-Kind"] or "none"
  local at = decisecond()
  if status >= 200 and status < 300 then
    bump(ok, kind .. " " .. at)
    local key = headers["X-Load-Key"]
    if key then
      table.insert(acked, kind .. " " .. key)
    end
  else
    bump(err, kind .. " " .. status .. " " .. at)
    local key = headers["X-Load-Key"]
    if key then
      table.insert(failed, kind .. " " .. key)
    end
  end
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("LOAD_OUT") or "load.out", "w"))
  for _, thread in ipairs(threads) do
    for _, line in ipairs(thread:get("acked")) do
      out:write("acked ", line, "\n")
    end
    for _, line in ipairs(thread:get("failed")) do
      out:write("failed ", line, "\n")
    end
    for name, count in pairs(thread:get("ok")) do
      out:write("ok ", name, " ", count, "\n")
    end
    for name, count in pairs(thread:get("err")) do
      out:write("err ", name, " ", count, "\n")
    end
  end
  out:write(string.format("latency %d %d %d %d\n", latency:percentile(50),
    latency:percentile(99), latency.mean, latency.max))
  local e = summary.errors
  out:write(string.format("summary %d %d %d %d %d %d %d\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  out:close()
end
