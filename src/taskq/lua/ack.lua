-- ack.lua: complete tasks: store each result, charge its credits, queue its webhook; each fenced.
--
-- KEYS[1]  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] retention (s)   ARGV[3] n = number of task types, then the n types
-- then 5 arguments per task: task id, fencing token, now (ms), webhook body (json), result (json)
--
-- Each task is checked and completed on its own (a task whose token no longer holds it is left as it
-- is); the counters, leases, webhook queue and batch progress of all of them are written once.
-- A synchronous call whose client went away becomes CANCELED instead, and is not charged; any other
-- completed call is charged when its intake collects the answer (collect.lua), not here: until then
-- its credits stay reserved and it waits in T:collect, refunded by the reaper if nobody collects it.
-- Returns one entry per task: 1 when completed, 0 when fenced out (nothing changed for it).

--#include queue_lib

local tag, retention, ntypes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local types = {}
for i = 4, 3 + ntypes do
  types[#types + 1] = ARGV[i]
end
defer_counts()
local out = {}
for at = 4 + ntypes, #ARGV, 5 do
  local id, token, now = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local t = held(tag, id, token, unpack(FINISH_FIELDS))
  if t and abandoned(tag, id, t) then
    settle(tag, t[3], t[6], types)
    cancel_task(tag, id, now, retention)
    out[#out + 1] = 1
  elseif t then
    local org, ttype, cost = t[3], t[6], tonumber(t[9] or "0")
    if t[10] == SYNC_PRIORITY then
      redis.call("ZADD", k_collect(tag), tonumber(now) + SYNC_COLLECT_MS, id)
      cost = 0
    else
      hincr(k_org(tag, org), "credits", -cost)
      hincr(k_org(tag, org), "reserved", -cost)
    end
    settle(tag, org, ttype, types)
    finish(tag, id, now, retention, ARGV[at + 3], "COMPLETED", "", "", true, t,
      {"status", "COMPLETED", "finished", now, "charged", cost, "result", ARGV[at + 4]}, cost)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush_queue(tag, types, retention)
return out
