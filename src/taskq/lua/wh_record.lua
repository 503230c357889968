-- wh_record.lua: record one webhook delivery attempt and decide what comes next, atomically.
--
-- KEYS[1]  waiting deliveries  T:wh:due
-- KEYS[2]  leased deliveries   T:wh:proc
-- ARGV[1]  shard tag T   ARGV[2] delivery id   ARGV[3] attempt number (from the claim)   ARGV[4] now (ms)
-- ARGV[5]  decision: "delivered" | "retry" | "failed" | "defer" (not sent: its receiver is saturated)
-- ARGV[6]  next attempt (ms) for retry and defer
-- ARGV[7]  the attempt's log line (json; unused for defer)   ARGV[8] retention of final records (s)
--
-- Only the current claim (state "sending", same attempt number: an expired lease was put back to
-- "pending" by wh_reap) moves the delivery on; an older claim only adds its log line, unless it
-- delivered: a success counts whoever made it. A final delivery (delivered / failed) expires after
-- the retention, and its task (if it has not expired) gets wh_state, and `delivered` (ms) on success.
-- wh_state follows the task's latest delivery (wh_last) only, so an old failure cannot hide a newer
-- redelivery. Each recorded attempt counts in the task's wh_attempts.
-- Returns the delivery state afterwards, "stale" (nothing moved) or "missing" (record expired).

--#include metrics_lib

local tag, id, attempt, now, decision = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = k_delivery(tag, id)
local d = redis.call("HMGET", key, "state", "attempts", "task", "url")
local state, task = d[1], d[3]
if not state then
  return "missing"
end
local current = state == "sending" and d[2] == attempt

if decision == "defer" then
  if not current then
    return "stale"
  end
  redis.call("HSET", key, "state", "pending", "next", ARGV[6], "attempts", tonumber(attempt) - 1)
  redis.call("ZREM", KEYS[2], id)
  redis.call("ZADD", KEYS[1], ARGV[6], id)
  return "pending"
end

redis.call("RPUSH", k_delivery_log(tag, id), ARGV[7])
local outcome = cjson.decode(ARGV[7]).outcome or decision
count(tag, "wh:" .. outcome)
if decision ~= "delivered" then  -- the dashboard's failing endpoints: attempts per host this hour
  local url = d[4] or ""
  local host = string.match(url, "^%a+://([^/?#]+)") or url
  redis.call("HINCRBY", k_wh_failing(tag), host, 1)
  if redis.call("TTL", k_wh_failing(tag)) < 0 then
    redis.call("EXPIRE", k_wh_failing(tag), 3600)
  end
end
if state == "delivered" or state == "failed" or not (current or decision == "delivered") then
  return "stale"
end
local tkey = k_task(tag, task or "")
local t = (task and task ~= "") and redis.call("HMGET", tkey, "status", "wh_last") or {}
if t[1] then  -- the task has not expired
  redis.call("HINCRBY", tkey, "wh_attempts", 1)
end
redis.call("ZREM", KEYS[2], id)
if decision == "retry" then
  redis.call("HSET", key, "state", "pending", "next", ARGV[6])
  redis.call("ZADD", KEYS[1], ARGV[6], id)
  return "pending"
end

if not current then
  redis.call("ZREM", KEYS[1], id)  -- a late success of a reaped claim: it may be waiting again
end
local final = decision == "delivered" and "delivered" or "failed"
redis.call("HSET", key, "state", final, "finished", now)
local retention = tonumber(ARGV[8])
redis.call("EXPIRE", key, retention)
redis.call("EXPIRE", k_delivery_log(tag, id), retention)

if t[1] then
  local last = t[2]
  local mark = (last == id or not last) and {"wh_state", final} or {}
  if final == "delivered" then
    mark[#mark + 1] = "delivered"
    mark[#mark + 1] = now
  end
  if #mark > 0 then
    redis.call("HSET", tkey, unpack(mark))
  end
end
return final
