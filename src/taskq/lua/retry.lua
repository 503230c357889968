-- retry.lua: a retryable failure: the task waits in T:delayed until due, QUEUED; fenced.
--
-- KEYS[1]  w  leases       T:proc
-- KEYS[2]  w  retry waits  T:delayed
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] due (ms)   ARGV[5] now (ms)
-- ARGV[6]  retention (s)   ARGV[7] error of this attempt (json {code, message})
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:org:<org>            rw T:t:<id>               r  T:lane:<org>:<type>
--   w  T:ready:<type>         w  T:idem:<org>:<key>     rw T:org:<org>:types
--   rw T:b:<id>               w  T:b:<id>:ids           w  T:wh:<id>
--   rw T:turn                 rw T:capped               w  T:pinflight
--   w  T:proc                 w  T:rr                   w  T:wh:due
--   w  T:metrics              w  T:stats:<minute>       w  T:failures
--   w  T:reply:<id>
--   w  T:inbox:<id>
--
-- A retry is a cancellation safe point: a task whose cancel was requested while it ran becomes
-- CANCELED here instead of waiting.
--
-- A waiting task counts as queued (queued, q<p>) and keeps its credit reservation; claim.lua moves
-- it back to its lane at its original score once due. The attempt goes in the task's attempt log.
-- Returns 1, or 0 when the token is stale.

--#include queue_lib

local tag, id, token = ARGV[1], ARGV[2], ARGV[3]
if not holds(tag, id, token) then
  return 0
end
local t = redis.call("HMGET", k_task(tag, id), "org", "type", "prio", "cancel", "attempts")
count(AT_ONCE, tag, "retried:" .. t[2])
local err = cjson.decode(ARGV[7])
log_attempt(tag, id, {attempt = tonumber(t[5] or "0"), at = tonumber(ARGV[5]), outcome = "retry",
  code = err.code, message = err.message, due = tonumber(ARGV[4])})
if t[4] == "1" then
  settle(AT_ONCE, tag, t[1], t[2])
  cancel_task(AT_ONCE, tag, id, ARGV[5], tonumber(ARGV[6]))
  return 1
end
redis.call("ZREM", KEYS[1], id)
redis.call("HSET", k_task(tag, id), "status", "QUEUED", "token", "")
redis.call("ZADD", KEYS[2], ARGV[4], id)
redis.call("HINCRBY", k_org(tag, t[1]), "queued", 1)
redis.call("HINCRBY", k_org(tag, t[1]), "q" .. t[3], 1)
settle(AT_ONCE, tag, t[1], t[2])
return 1
