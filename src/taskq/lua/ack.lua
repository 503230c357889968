-- ack.lua: complete tasks: store each result, charge its credits, queue its webhook; each fenced.
--
-- KEYS[1]  -  leases       T:proc  (routes the call to its shard; used as the derived T:proc)
-- ARGV[1]  shard tag T  ARGV[2] retention (s)
-- then 13 arguments per task: task id, fencing token, now (ms), webhook body (json), result (json), and
-- what its claim returned of the fields FINISH_FIELDS names (org, idempotency key, webhook url, type,
-- started, batch, cost, priority: fixed while the task is held, so the worker's copy is the record's)
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
--   w  T:collect              w  T:inbox:<id>
--
-- Each task is checked and completed on its own (a task whose token no longer holds it is left as it
-- is); the counters, leases, webhook queue and batch progress of all of them are written once.
-- A synchronous call whose client went away becomes CANCELED instead, and is not charged; any other
-- completed call is charged when its intake collects the answer (collect.lua), not here: until then
-- its credits stay reserved and it waits in T:collect, refunded by the reaper if nobody collects it.
-- Returns one entry per task: 1 when completed, 0 when fenced out (nothing changed for it).

--#include queue_lib

local tag, retention = ARGV[1], ARGV[2]
local d = queue_deferral()
-- Per org: the tasks that ended by type, and the credits charged; settled and charged once a call.
local ended, charged_by = {}, {}
local function tally(org, ttype, cost)
  local types = ended[org]
  if not types then
    types = {}
    ended[org] = types
    charged_by[org] = 0
  end
  types[ttype] = (types[ttype] or 0) + 1
  charged_by[org] = charged_by[org] + cost
end
local out = {}
for at = 3, #ARGV, 13 do
  local id, token, now = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local t = holds(tag, id, token) and {token, "PROCESSING", unpack(ARGV, at + 5, at + 12)}
  if t and abandoned(tag, id, t) then
    tally(t[3], t[6], 0)
    cancel_task(d, tag, id, now, retention)
    out[#out + 1] = 1
  elseif t then
    local charged = t[9]
    if t[10] == SYNC_PRIORITY then
      redis.call("ZADD", k_collect(tag), tonumber(now) + SYNC_COLLECT_MS, id)
      charged = 0
    end
    tally(t[3], t[6], tonumber(charged))
    finish(d, tag, {id = id, now = now, retention = retention, status = "COMPLETED", charged = charged,
      result = ARGV[at + 4], task = t, notify = true, body = ARGV[at + 3]})
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for org, types in pairs(ended) do
  for ttype, n in pairs(types) do
    settle(d, tag, org, ttype, n)
  end
  if charged_by[org] ~= 0 then
    hincr(d, k_org(tag, org), "credits", -charged_by[org])
    hincr(d, k_org(tag, org), "reserved", -charged_by[org])
  end
end
flush_queue(d, tag, retention)
return out
