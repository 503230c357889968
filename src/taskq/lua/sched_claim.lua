-- sched_claim.lua: claim the firing of one schedule occurrence, so that one worker alone fires it.
--
-- KEYS[1]  rw schedule     T:sched:<id>
-- KEYS[2]  w  fire times   T:scheds
-- ARGV[1]  schedule id  ARGV[2] now (ms)   ARGV[3] end of the claim (ms)
-- ARGV[4]  the next fire time the caller read   ARGV[5] the occurrence it will fire (ms)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written): none
--
-- A fresh claim needs the schedule unpaused, due, and its next fire time still the one the caller read
-- (another worker that fired it meanwhile moved it on). A firing claimed before whose claim has ended
-- unrecorded (its worker died or stalled) is taken over: same occurrence, so the same batch id, which
-- admits once. The claim takes a new fencing token and parks the schedule in T:scheds until it ends.
--
-- Returns {} when this caller does not fire, else {occurrence, token, org, tasks json, batch webhook,
-- revision, cron, every (ms), time zone, anchor (ms)}.

local id, now = ARGV[1], tonumber(ARGV[2])
local h = redis.call("HMGET", KEYS[1], "org", "next", "firing", "until", "paused", "tasks", "hook", "rev",
  "cron", "every", "tz", "anchor")
if not h[1] then
  redis.call("ZREM", KEYS[2], id)  -- deleted
  return {}
end
local occurrence
if h[3] and h[3] ~= "" then
  if tonumber(h[4]) > now then
    return {}  -- under way elsewhere
  end
  occurrence = h[3]
else
  if h[5] == "1" or h[2] ~= ARGV[4] or tonumber(h[2]) > now then
    return {}
  end
  occurrence = ARGV[5]
end
local token = redis.call("HINCRBY", KEYS[1], "token", 1)
redis.call("HSET", KEYS[1], "firing", occurrence, "until", ARGV[3])
redis.call("ZADD", KEYS[2], ARGV[3], id)
return {occurrence, tostring(token), h[1], h[6] or "[]", h[7] or "", h[8] or "0", h[9] or "", h[10] or "",
  h[11] or "UTC", h[12] or "0"}
