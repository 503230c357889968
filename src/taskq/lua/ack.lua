-- ack.lua: complete a task: store its result, charge its credits, queue its webhook; fenced.
--
-- KEYS[1]  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)
-- ARGV[5]  retention (s)   ARGV[6] webhook delivery id   ARGV[7] webhook body (json)
-- ARGV[8]  result (json)   ARGV[9..] task types
--
-- Returns 1, or 0 when the token no longer holds the task (nothing changes).

--#include queue_lib

local tag, id, token, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = held(tag, id, token, unpack(FINISH_FIELDS))
if not t then
  return 0
end
local types = {}
for i = 9, #ARGV do
  types[#types + 1] = ARGV[i]
end
local org, ttype, cost = t[3], t[6], tonumber(t[9] or "0")
redis.call("HINCRBY", k_org(tag, org), "credits", -cost)
redis.call("HINCRBY", k_org(tag, org), "reserved", -cost)
settle(tag, org, ttype, types)
finish(tag, id, now, tonumber(ARGV[5]), ARGV[6], ARGV[7], "COMPLETED", "", "", true, t,
  {"status", "COMPLETED", "finished", now, "charged", cost, "result", ARGV[8]}, cost)
return 1
