-- wh_redeliver.lua: queue a new delivery of a finished task's webhook event (same id, same body).
--
-- KEYS[1]  w  waiting deliveries  T:wh:due
-- ARGV[1]  shard tag T   ARGV[2] task id   ARGV[3] org id   ARGV[4] new delivery id   ARGV[5] now (ms)
-- ARGV[6]  body to send when the last delivery's record is gone (the task's event, rebuilt)
-- ARGV[7]  most deliveries one task may have
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:t:<id>               rw T:wh:<id>              rw T:t:<id>:wh
--
-- The body and event id are copied from the task's latest delivery (wh_last) so the receiver gets
-- the very same event; the new id is appended to the task's delivery list T:t:<id>:wh (seeded with
-- wh_last when the completing script did not start the list), which expires with the task (the task
-- field wh_list says the list exists, for wh_record.lua to expire it with a task that had no expiry
-- while its first delivery was waiting).
-- Returns {"ok", event id}, {"missing"} (no such task for this org), {"not_terminal", status},
-- {"no_webhook"} or {"too_many", limit}.

local tag, id, org, delivery, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tkey = k_task(tag, id)
local t = redis.call("HMGET", tkey, "org", "status", "webhook", "wh_last")
if t[1] ~= org then
  return {"missing"}
end
if t[2] ~= "COMPLETED" and t[2] ~= "FAILED" then
  return {"not_terminal", t[2]}
end
if not t[3] or t[3] == "" then
  return {"no_webhook"}
end
local list = k_task_deliveries(tag, id)
local last = t[4] or ""
if redis.call("EXISTS", list) == 0 and last ~= "" then
  redis.call("RPUSH", list, last)
end
if redis.call("LLEN", list) >= tonumber(ARGV[7]) then
  return {"too_many", ARGV[7]}
end

local event, body = "msg_" .. id, ARGV[6]
if last ~= "" then
  local key, p = delivery_record(tag, last)
  local prev = redis.call("HMGET", key, p .. "event", p .. "body")
  if prev[1] and prev[2] then
    event, body = prev[1], prev[2]
  end
end
redis.call("HSET", k_delivery(tag, delivery), "task", id, "org", org, "url", t[3], "event", event,
  "body", body, "attempts", 0, "state", "pending", "created", now)
redis.call("ZADD", KEYS[1], now, delivery)
redis.call("RPUSH", list, delivery)
local ttl = redis.call("PTTL", tkey)
if ttl > 0 then
  redis.call("PEXPIRE", list, ttl)
end
redis.call("HSET", tkey, "wh_state", "pending", "wh_last", delivery, "wh_list", 1)
return {"ok", event}
