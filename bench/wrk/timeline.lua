-- wrk script: per-second counts of responses by status and API version, and an optional
-- pause between requests (a steady load instead of saturation).
--   wrk -s timeline.lua ... -- <out.json> <delay_ms>
-- Writes one JSON object to <out.json> when wrk stops (-d elapsed or SIGINT): the summary,
-- latency percentiles (µs) and "seconds": {"<unix second>": {"ok": n, "bad": n, "s502": n,
-- "v:<version>": n}}.

local threads = {}
out_path, delay_ms = nil, 0  -- globals: done() reads them with thread:get

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  out_path = args[1]
  delay_ms = tonumber(args[2] or "0") or 0
  buckets = {}
end

function delay()
  return delay_ms
end

-- Flat keys "<second>|<what>": wrk 4.1 copies only flat tables between threads (thread:get).
local function count(sec, what)
  local key = sec .. "|" .. what
  buckets[key] = (buckets[key] or 0) + 1
end

function response(status, headers, body)
  local sec = tostring(os.time())
  if status >= 200 and status < 300 then
    count(sec, "ok")
    local version = body and string.match(body, '"version"%s*:%s*"([^"]+)"')
    if version then
      count(sec, "v:" .. version)
    end
  else
    count(sec, "bad")
    count(sec, "s" .. tostring(status))
  end
end

local function encode(v)
  local t = type(v)
  if t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      table.insert(parts, string.format("%q:%s", tostring(k), encode(x)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "number" then
    return string.format("%.17g", v)
  elseif t == "string" then
    return string.format("%q", v)
  end
  return "null"
end

function done(summary, latency, requests)
  local merged = {}
  local path = nil
  for _, thread in ipairs(threads) do
    path = path or thread:get("out_path")
    local b = thread:get("buckets") or {}
    for key, n in pairs(b) do
      local sec, what = string.match(key, "^([^|]+)|(.*)$")
      local m = merged[sec] or {}
      m[what] = (m[what] or 0) + n
      merged[sec] = m
    end
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = {
      connect = summary.errors.connect,
      read = summary.errors.read,
      write = summary.errors.write,
      status = summary.errors.status,
      timeout = summary.errors.timeout,
    },
    latency_us = {
      min = latency.min, max = latency.max, mean = latency.mean,
      p50 = latency:percentile(50), p90 = latency:percentile(90), p99 = latency:percentile(99),
    },
    seconds = merged,
  }
  local f = assert(io.open(path, "w"))
  f:write(encode(result))
  f:close()
end
