-- clear.lua: remove up to ARGV[3] of one organization's QUEUED tasks (lanes and retry waits).
--
-- KEYS[1]  w  org hash      T:org:<org>
-- KEYS[2]  rw delayed       T:delayed
-- ARGV[1]  shard tag T   ARGV[2] org id   ARGV[3] limit   ARGV[4] now (ms)   ARGV[5] retention (s)
-- ARGV[6..] task types
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:t:<id>               rw T:lane:<org>:<type>    w  T:ready:<type>
--   w  T:idem:<org>:<key>     w  T:org:<org>:types      rw T:b:<id>
--   w  T:b:<id>:ids           w  T:wh:<id>              w  T:wh:due
--
-- Each removed task is deleted with its idempotency key; its credit reservation is released and the
-- queued counters drop; its batch counts it as canceled. Returns the number removed (0: none left).
-- Synchronous calls waiting for a worker (priority 11: negative lane scores) are not async tasks and
-- stay.

--#include queue_lib

local tag, org, limit, now, retention = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local removed, released = 0, 0
local prio_counts = {}

local function drop(id)
  local t = redis.call("HMGET", k_task(tag, id), "cost", "prio", "idem", "batch")
  if t[2] then
    released = released + tonumber(t[1] or "0")
    prio_counts[t[2]] = (prio_counts[t[2]] or 0) + 1
    if t[3] and t[3] ~= "" then
      redis.call("DEL", k_idem(tag, org, t[3]))
    end
    redis.call("DEL", k_task(tag, id))
    if t[4] and t[4] ~= "" then
      batch_progress(tag, t[4], {canceled = 1}, 0, now, retention)
    end
    removed = removed + 1
  end
end

for i = 6, #ARGV do
  if removed >= limit then break end
  local lane = k_lane(tag, org, ARGV[i])
  local ids = redis.call("ZRANGEBYSCORE", lane, 0, "+inf", "LIMIT", 0, limit - removed)
  for _, id in ipairs(ids) do
    drop(id)
    redis.call("ZREM", lane, id)
  end
  if redis.call("EXISTS", lane) == 0 then
    redis.call("ZREM", k_ready(tag, ARGV[i]), org)
    redis.call("SREM", k_org_types(tag, org), ARGV[i])
  end
end

if removed < limit then
  for _, id in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
    if removed >= limit then break end
    local t = redis.call("HMGET", k_task(tag, id), "org", "prio")
    if t[1] == org and t[2] ~= "11" then
      drop(id)
      redis.call("ZREM", KEYS[2], id)
    end
  end
end

if removed > 0 then
  redis.call("HINCRBY", KEYS[1], "queued", -removed)
  redis.call("HINCRBY", KEYS[1], "reserved", -released)
  for prio, count in pairs(prio_counts) do
    redis.call("HINCRBY", KEYS[1], "q" .. prio, -count)
  end
end
return removed
