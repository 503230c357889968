-- cancel.lua: cancel one task of an organization.
--
-- KEYS[1]  w  retry waits  T:delayed
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] org id   ARGV[4] now (ms)   ARGV[5] retention (s)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:org:<org>            rw T:t:<id>               rw T:lane:<org>:<type>
--   w  T:ready:<type>         w  T:idem:<org>:<key>     w  T:org:<org>:types
--   rw T:b:<id>               w  T:b:<id>:ids           w  T:wh:<id>
--   rw T:turn                 r  T:capped               w  T:proc
--   w  T:rr                   w  T:wh:due               w  T:metrics
--   w  T:stats:<minute>       w  T:failures             w  T:reply:<id>
--   w  T:inbox:<id>
--
-- A QUEUED task (in its lane or waiting to retry) becomes CANCELED at once: out of the queue, its
-- credit reservation released, counted, its webhook sent only if the org opted in (notify_canceled).
-- A PROCESSING task is marked; it becomes CANCELED at its next safe point (a retry) — if its current
-- call succeeds it completes, so a task is either canceled or runs, never both. Atomic against claims.
-- Returns "canceled", "requested" (PROCESSING), "missing" (unknown or another org's), or the
-- terminal status it already has.

--#include queue_lib

local tag, id, org, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = redis.call("HMGET", k_task(tag, id), "org", "status", "type", "prio")
if t[1] ~= org then
  return "missing"
end
if t[2] == "PROCESSING" then
  redis.call("HSET", k_task(tag, id), "cancel", 1)
  return "requested"
end
if t[2] ~= "QUEUED" then
  return t[2]
end
if redis.call("ZREM", k_lane(tag, org, t[3]), id) == 1 then
  if redis.call("SISMEMBER", k_capped(tag), org) == 0 then
    index_lane(tag, org, t[3], turn_of(tag, org))
  end
elseif redis.call("ZREM", KEYS[1], id) == 0 then
  return "missing"
end
redis.call("HINCRBY", k_org(tag, org), "queued", -1)
redis.call("HINCRBY", k_org(tag, org), "q" .. t[4], -1)
cancel_task(AT_ONCE, tag, id, now, tonumber(ARGV[5]))
return "canceled"
