-- metrics_lib.lua: counters for /metrics and the dashboard (field names: see taskq.metrics), and the
-- ISO-8601 formatting of event timestamps. Spliced into scripts with "--#include metrics_lib".

-- Upper bounds (ms) of the latency histogram: the same as taskq.metrics.LATENCY_BUCKETS_MS.
local LAT_BUCKETS = {100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000}

-- Counter updates can be deferred: a script that handles many tasks in one call calls defer_counts()
-- first and flush_counts() (or queue_lib's flush_queue()) before it returns, so each counter is
-- written once per call instead of once per task. Otherwise every update is written at once.
local deferred = nil  -- key -> {field -> delta}
local expiring = {}  -- key -> seconds: expire the key when a deferred update creates its field

local function defer_counts()
  deferred = {}
end

-- HINCRBY key field n, now or at the flush; ttl: expire the key when this creates the field.
-- Returns the new value when written now (nil when deferred).
local function hincr(key, field, n, ttl)
  if deferred then
    local h = deferred[key]
    if not h then
      h = {}
      deferred[key] = h
    end
    h[field] = (h[field] or 0) + n
    if ttl then
      expiring[key] = ttl
    end
    return nil
  end
  local value = redis.call("HINCRBY", key, field, n)
  if ttl and value == n then
    redis.call("EXPIRE", key, ttl)
  end
  return value
end

-- Three or more fields of one key are written with one read and one write, fewer with an HINCRBY each.
local function flush_counts()
  local pending = deferred
  deferred = nil
  for key, fields in pairs(pending or {}) do
    local names, deltas = {}, {}
    for field, n in pairs(fields) do
      if n ~= 0 then
        names[#names + 1] = field
        deltas[#deltas + 1] = n
      end
    end
    local created = false  -- some field did not exist before
    if #names >= 3 then
      local old = redis.call("HMGET", key, unpack(names))
      local write = {}
      for i, field in ipairs(names) do
        created = created or not old[i]
        write[#write + 1] = field
        write[#write + 1] = string.format("%d", tonumber(old[i] or "0") + deltas[i])
      end
      redis.call("HSET", key, unpack(write))
    else
      for i, field in ipairs(names) do
        created = redis.call("HINCRBY", key, field, deltas[i]) == deltas[i] or created
      end
    end
    if expiring[key] and created then
      redis.call("EXPIRE", key, expiring[key])
    end
  end
end

local function count(tag, field, n)
  hincr(k_metrics(tag), field, n or 1)
end

-- One more event in this minute's bucket of the dashboard chart (kept two hours).
local function count_minute(tag, now, field)
  hincr(k_stats(tag, math.floor(tonumber(now) / 60000)), field, 1, 7200)
end

local function count_latency(tag, ttype, ms)
  local index = #LAT_BUCKETS
  for i, bound in ipairs(LAT_BUCKETS) do
    if ms <= bound then
      index = i - 1
      break
    end
  end
  count(tag, "lat:" .. ttype .. ":" .. index)  -- the count is the sum of the buckets
  count(tag, "latsum:" .. ttype, ms)
end

-- Epoch milliseconds as 2026-04-09T15:00:00.000Z (days-from-civil, proleptic Gregorian calendar).
local function iso_ms(ms)
  ms = tonumber(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, month, day, math.floor(rem / 3600),
    math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end
