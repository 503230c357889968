-- wh_record.lua: record webhook delivery attempts and decide what comes next, each atomically.
--
-- KEYS[1]  waiting deliveries  T:wh:due
-- KEYS[2]  leased deliveries   T:wh:proc
-- ARGV[1]  shard tag T   ARGV[2] retention of final records (s)
-- then 6 arguments per attempt: delivery id, attempt number (from the claim), now (ms),
--          decision: "delivered" | "retry" | "failed" | "defer" (not sent: its receiver is saturated),
--          next attempt (ms) for retry and defer, the attempt's log line (json; unused for defer)
--
-- Only the current claim (state "sending", same attempt number: an expired lease was put back to
-- "pending" by wh_reap) moves the delivery on; an older claim only adds its log line, unless it
-- delivered: a success counts whoever made it. A final delivery (delivered / failed) expires after
-- the retention, and its task (if it has not expired) gets wh_state, and `delivered` (ms) on success.
-- wh_state follows the task's latest delivery (wh_last) only, so an old failure cannot hide a newer
-- redelivery. Each recorded attempt counts in the task's wh_attempts.
-- Counters and lease removals of all the attempts are written once. Returns, per attempt, the
-- delivery state afterwards, "stale" (nothing moved) or "missing" (record expired).

--#include metrics_lib

local tag, retention = ARGV[1], tonumber(ARGV[2])
local unleased = {}  -- T:wh:proc removals, written once

local function record(id, attempt, now, decision, next_ms, line)
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
    redis.call("HSET", key, "state", "pending", "next", next_ms, "attempts", tonumber(attempt) - 1)
    unleased[#unleased + 1] = id
    redis.call("ZADD", KEYS[1], next_ms, id)
    return "pending"
  end

  redis.call("RPUSH", k_delivery_log(tag, id), line)
  local outcome = cjson.decode(line).outcome or decision
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
  unleased[#unleased + 1] = id
  if decision == "retry" then
    redis.call("HSET", key, "state", "pending", "next", next_ms)
    redis.call("ZADD", KEYS[1], next_ms, id)
    return "pending"
  end

  if not current then
    redis.call("ZREM", KEYS[1], id)  -- a late success of a reaped claim: it may be waiting again
  end
  local final = decision == "delivered" and "delivered" or "failed"
  redis.call("HSET", key, "state", final, "finished", now)
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
end

defer_counts()
local out = {}
for at = 3, #ARGV, 6 do
  out[#out + 1] = record(ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5])
end
flush_counts()
for from = 1, #unleased, 1000 do
  redis.call("ZREM", KEYS[2], unpack(unleased, from, math.min(from + 999, #unleased)))
end
return out
