-- wh_record.lua: record webhook delivery attempts and decide what comes next, each atomically.
--
-- KEYS[1]  w  waiting deliveries  T:wh:due
-- KEYS[2]  w  leased deliveries   T:wh:proc
-- ARGV[1]  shard tag T   ARGV[2] retention of final records (s)
-- then 7 arguments per attempt: delivery id, attempt number (from the claim), now (ms),
--          decision: "delivered" | "retry" | "failed" | "defer" (not sent: its receiver is saturated),
--          next attempt (ms) for retry and defer, the attempt's log line (json; unused for defer),
--          the body built at the claim to store, for a delivery stored without one ("" otherwise)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:t:<id>               rw T:wh:<id>              w  T:t:<id>:wh
--   w  T:metrics              rw T:wh:failing
--
-- Only the current claim (state "sending", same attempt number: an expired lease was put back to
-- "pending" by wh_reap) moves the delivery on; an older claim only adds its log line, unless it
-- delivered: a success counts whoever made it. Each recorded attempt counts in the task's
-- wh_attempts. A final delivery (delivered / failed) gives its task (if it has not expired) wh_state,
-- and `delivered` (ms) on success; wh_state follows the task's latest delivery (wh_last) only, so an
-- old failure cannot hide a newer redelivery.
--
-- A task's first delivery lives in its task hash (see delivery_record), so recording it is one read
-- and one write of that hash; the task has no expiry while it waits, and its retention starts when it
-- is final. Any other delivery has its own record, which expires after the retention once final.
-- A body built at the claim (a canceled task's, batch.completed: see taskq.deliveries) is stored with
-- the attempt, so every later attempt sends the same bytes.
-- Counters and lease removals of all the attempts are written once. Returns, per attempt, the
-- delivery state afterwards, "stale" (nothing moved) or "missing" (record expired).

--#include metrics_lib

local tag, retention = ARGV[1], tonumber(ARGV[2])
local unleased = {}  -- T:wh:proc removals, written once
local counters = deferral()  -- the counts of every attempt, written once

local function record(id, attempt, now, decision, next_ms, line, body)
  local key, p = delivery_record(tag, id)
  -- The task's fields come along when the delivery lives in the task hash (nil otherwise).
  local d = redis.call("HMGET", key, p .. "state", p .. "attempts", p .. "task", p .. "url", p .. "log",
    "status", "wh_last", "wh_attempts", "wh_list")
  local state, task = d[1], d[3]
  if not state then
    return "missing"
  end
  local current = state == "sending" and d[2] == attempt

  if decision == "defer" then
    if not current then
      return "stale"
    end
    local write = {p .. "state", "pending", p .. "next", next_ms, p .. "attempts", tonumber(attempt) - 1}
    if body ~= "" then
      write[#write + 1] = p .. "body"; write[#write + 1] = body
    end
    redis.call("HSET", key, unpack(write))
    unleased[#unleased + 1] = id
    redis.call("ZADD", KEYS[1], next_ms, id)
    return "pending"
  end

  local write = {p .. "log", d[5] and (d[5] .. "\n" .. line) or line}
  if body ~= "" then
    write[#write + 1] = p .. "body"; write[#write + 1] = body
  end
  local outcome = cjson.decode(line).outcome or decision
  count(counters, tag, "wh:" .. outcome)
  if decision ~= "delivered" then  -- the dashboard's failing endpoints: attempts per host this hour
    local url = d[4] or ""
    local host = string.match(url, "^%a+://([^/?#]+)") or url
    redis.call("HINCRBY", k_wh_failing(tag), host, 1)
    if redis.call("TTL", k_wh_failing(tag)) < 0 then
      redis.call("EXPIRE", k_wh_failing(tag), 3600)
    end
  end
  if state == "delivered" or state == "failed" or not (current or decision == "delivered") then
    redis.call("HSET", key, unpack(write))
    return "stale"
  end

  -- The task's own view: in this hash, or in the task hash (if it has not expired) with one more read.
  local tkey, t = key, {d[6], d[7], d[8]}
  if p == "" then
    tkey = k_task(tag, task or "")
    t = (task and task ~= "") and redis.call("HMGET", tkey, "status", "wh_last", "wh_attempts") or {}
  end
  local mark = {}
  if t[1] then
    mark = {"wh_attempts", tonumber(t[3] or "0") + 1}
  end
  unleased[#unleased + 1] = id
  local result
  if decision == "retry" then
    write[#write + 1] = p .. "state"; write[#write + 1] = "pending"
    write[#write + 1] = p .. "next"; write[#write + 1] = next_ms
    redis.call("ZADD", KEYS[1], next_ms, id)
    result = "pending"
  else
    if not current then
      redis.call("ZREM", KEYS[1], id)  -- a late success of a reaped claim: it may be waiting again
    end
    result = decision == "delivered" and "delivered" or "failed"
    write[#write + 1] = p .. "state"; write[#write + 1] = result
    write[#write + 1] = p .. "finished"; write[#write + 1] = now
    if t[1] then
      if t[2] == id or not t[2] then
        mark[#mark + 1] = "wh_state"; mark[#mark + 1] = result
      end
      if result == "delivered" then
        mark[#mark + 1] = "delivered"; mark[#mark + 1] = now
      end
    end
  end
  if tkey == key then
    for _, v in ipairs(mark) do
      write[#write + 1] = v
    end
  elseif #mark > 0 then
    redis.call("HSET", tkey, unpack(mark))
  end
  redis.call("HSET", key, unpack(write))
  if result ~= "pending" then
    redis.call("EXPIRE", key, retention)  -- the record; for a first delivery, its task with it
    if p ~= "" and d[9] then
      redis.call("EXPIRE", k_task_deliveries(tag, task), retention)
    end
  end
  return result
end

local out = {}
for at = 3, #ARGV, 7 do
  out[#out + 1] = record(ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5],
    ARGV[at + 6])
end
flush_counts(counters)
for from = 1, #unleased, 1000 do
  redis.call("ZREM", KEYS[2], unpack(unleased, from, math.min(from + 999, #unleased)))
end
return out
