-- reap.lua: return expired leases to the queue at their original place in line.
--
-- KEYS[1]  rw leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] now (ms)   ARGV[3] limit   ARGV[4] max attempts   ARGV[5] retention (s)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:org:<org>            rw T:t:<id>               rw T:lane:<org>:<type>
--   w  T:ready:<type>         w  T:idem:<org>:<key>     rw T:org:<org>:types
--   rw T:b:<id>               w  T:b:<id>:ids           w  T:wh:<id>
--   rw T:turn                 rw T:capped               w  T:pinflight
--   w  T:proc                 w  T:rr                   w  T:wh:due
--   w  T:metrics              w  T:stats:<minute>       w  T:failures
--   w  T:reply:<id>
--   rw T:collect              w  T:inbox:<id>
--
-- A task whose attempts (claims) reached max attempts is not requeued: it stays leased and is returned
-- for the caller to fail (fail.lua with "only if expired"), which builds its webhook body. A task whose
-- cancel was requested while it ran becomes CANCELED (an expired lease is a cancellation safe point).
-- A requeued task's attempt goes in its attempt log. Completed synchronous calls nobody collected by
-- now are refunded (see queue_lib's sync notes).
-- Returns {requeued count, exhausted...}; each exhausted entry is a claim.lua entry.

--#include queue_lib

local tag, now, limit, max_attempts = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local retention = tonumber(ARGV[5])

local requeued, exhausted = 0, {}
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit)) do
  local t = redis.call("HMGET", k_task(tag, id), "status", "attempts")
  if t[1] ~= "PROCESSING" then
    redis.call("ZREM", KEYS[1], id) -- a stray entry: the task finished or vanished
  elseif cancel_if_requested(tag, id, now, retention) then
    count(AT_ONCE, tag, "lease_expired")
  elseif tonumber(t[2] or "0") >= max_attempts then
    exhausted[#exhausted + 1] = describe(tag, id)
    count(AT_ONCE, tag, "lease_expired")
  else
    log_attempt(tag, id, {attempt = tonumber(t[2] or "0"), at = tonumber(now), outcome = "lease_expired",
      message = "the worker's lease ran out (worker stopped or lost)"})
    requeue(tag, id, 0)
    requeued = requeued + 1
    count(AT_ONCE, tag, "lease_expired")
  end
end
-- sync: completed calls whose intake did not collect the answer in time (it stopped, or crashed) are
-- refunded: their reservation released, nothing charged (collect.lua then finds them gone).
for _, id in ipairs(redis.call("ZRANGEBYSCORE", k_collect(tag), "-inf", now, "LIMIT", 0, limit)) do
  redis.call("ZREM", k_collect(tag), id)
  local t = redis.call("HMGET", k_task(tag, id), "org", "cost")
  if t[1] then
    redis.call("HINCRBY", k_org(tag, t[1]), "reserved", -tonumber(t[2] or "0"))
  end
  count(AT_ONCE, tag, "sync_uncollected")
end
local out = {requeued}
for _, entry in ipairs(exhausted) do
  out[#out + 1] = entry
end
return out
