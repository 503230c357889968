-- fail.lua: a task FAILED: store the error, release its credits, queue its webhook; fenced.
--
-- KEYS[1]  r  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)
-- ARGV[5]  retention (s)   ARGV[6] webhook body (json)   ARGV[7] error (json {code, message})
-- ARGV[8]  "1": only if the lease expired (the reaper)
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
-- Returns 1, or 0 when the token no longer holds the task (or the lease was renewed meanwhile).

--#include queue_lib

local tag, id, token, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = held(tag, id, token, unpack(FINISH_FIELDS))
if not t then
  return 0
end
if ARGV[8] == "1" and tonumber(redis.call("ZSCORE", KEYS[1], id)) > tonumber(now) then
  return 0
end
local org, ttype, cost = t[3], t[6], tonumber(t[9] or "0")
redis.call("HINCRBY", k_org(tag, org), "reserved", -cost)
settle(AT_ONCE, tag, org, ttype)
finish(AT_ONCE, tag, {id = id, now = now, retention = tonumber(ARGV[5]), status = "FAILED", charged = 0,
  error = ARGV[7], task = t, notify = true, body = ARGV[6]})
return 1
