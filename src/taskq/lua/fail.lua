-- fail.lua: a task FAILED: store the error, release its credits, queue its webhook; fenced.
--
-- KEYS[1]  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)
-- ARGV[5]  retention (s)   ARGV[6] webhook delivery id   ARGV[7] webhook body (json)
-- ARGV[8]  error (json {code, message})   ARGV[9] "1": only if the lease expired (the reaper)
-- ARGV[10..] task types
--
-- Returns 1, or 0 when the token no longer holds the task (or the lease was renewed meanwhile).

--#include queue_lib

local tag, id, token, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not holds(tag, id, token) then
  return 0
end
if ARGV[9] == "1" and tonumber(redis.call("ZSCORE", KEYS[1], id)) > tonumber(now) then
  return 0
end
local types = {}
for i = 10, #ARGV do
  types[#types + 1] = ARGV[i]
end
local t = redis.call("HMGET", k_task(tag, id), "org", "type", "cost")
redis.call("HSET", k_task(tag, id), "status", "FAILED", "finished", now, "charged", 0, "error", ARGV[8])
redis.call("HINCRBY", k_org(tag, t[1]), "reserved", -tonumber(t[3] or "0"))
settle(tag, t[1], t[2], types)
local err = cjson.decode(ARGV[8])
finish(tag, id, now, tonumber(ARGV[5]), ARGV[6], ARGV[7], "FAILED", err.code or "", err.message or "", true)
return 1
