-- metrics_lib.lua: counters for /metrics and the dashboard (field names: see taskq.metrics), written at
-- once or deferred. Spliced into scripts with "--#include metrics_lib".

-- Counter updates are written at once or deferred. A script that handles many tasks in one call makes
-- a deferral (`local d = deferral()`), passes it to every update and flushes it before it returns
-- (flush_counts(d), or queue_lib's flush_queue(d, ...)), so each counter is written once per call
-- instead of once per task. Every function taking a deferral `d` writes at once when given AT_ONCE.
local AT_ONCE = false

-- A deferral: counts (key -> {field -> delta}), expiring (key -> seconds: expire the key when the
-- flush creates one of its fields), and the names made this call: the metrics key (metrics), per-minute
-- keys (minutes) and latency bucket fields (lat).
local function deferral()
  return {counts = {}, expiring = {}, minutes = {}, lat = {}}
end

-- HINCRBY key field n, now or at the flush of d; ttl: expire the key when this creates the field.
-- Returns the new value when written now (nil when deferred).
local function hincr(d, key, field, n, ttl)
  if d then
    local h = d.counts[key]
    if not h then
      h = {}
      d.counts[key] = h
    end
    h[field] = (h[field] or 0) + n
    if ttl then
      d.expiring[key] = ttl
    end
    return nil
  end
  local value = redis.call("HINCRBY", key, field, n)
  if ttl and value == n then
    redis.call("EXPIRE", key, ttl)
  end
  return value
end

-- Write the counts of d. Three or more fields of one key are written with one read and one write,
-- fewer with an HINCRBY each.
local function flush_counts(d)
  for key, fields in pairs(d.counts) do
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
        created = redis.call("HINCRBY", key, field, string.format("%d", deltas[i])) == deltas[i] or created
      end
    end
    if d.expiring[key] and created then
      redis.call("EXPIRE", key, d.expiring[key])
    end
  end
  d.counts, d.expiring = {}, {}
end

local function count(d, tag, field, n)
  local key = d and d.metrics  -- named once per deferral
  if not key then
    key = k_metrics(tag)
    if d then
      d.metrics = key
    end
  end
  hincr(d, key, field, n or 1)
end

-- One more event in this minute's bucket of the dashboard chart (kept two hours). A deferral names each
-- minute's key once: a number in a name is formatted by printf, the dearest step of counting a task.
local function count_minute(d, tag, now, field)
  local minute = math.floor(tonumber(now) / 60000)
  local key = d and d.minutes[minute]
  if not key then
    key = k_stats(tag, minute)
    if d then
      d.minutes[minute] = key
    end
  end
  hincr(d, key, field, 1, 7200)
end

-- One provider call of `ms` in the latency histogram; LAT_BUCKETS is generated from
-- taskq.keys.LATENCY_BUCKETS_MS.
local function count_latency(d, tag, ttype, ms)
  local index = #LAT_BUCKETS
  for i, bound in ipairs(LAT_BUCKETS) do
    if ms <= bound then
      index = i - 1
      break
    end
  end
  local names = d and d.lat[ttype]  -- the bucket field names this call made for the type
  if not names then
    names = {}
    if d then
      d.lat[ttype] = names
    end
  end
  local field = names[index]
  if not field then
    field = "lat:" .. ttype .. ":" .. index
    names[index] = field
  end
  count(d, tag, field)  -- the count is the sum of the buckets
  count(d, tag, "latsum:" .. ttype, ms)
end
