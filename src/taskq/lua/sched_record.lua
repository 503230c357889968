-- sched_record.lua: record a schedule's firing and move it on to its next occurrence; fenced.
--
-- KEYS[1]  rw schedule     T:sched:<id>
-- KEYS[2]  w  recent runs  T:sched:<id>:runs
-- KEYS[3]  w  fire times   T:scheds
-- ARGV[1]  schedule id  ARGV[2] fencing token of the claim   ARGV[3] the run (JSON)
-- ARGV[4]  next fire time (ms), from the timing of revision ARGV[5]   ARGV[6] runs kept
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written): none
--
-- When the schedule changed since the claim (another revision), the next fire time its change wrote
-- stands. A next fire time already past is due at once: the loop then fires the latest occurrence
-- due, once (missed occurrences never fire in a burst).
-- Returns 1, or 0 when the claim was taken over (token) or the schedule is gone.

local h = redis.call("HMGET", KEYS[1], "token", "rev", "paused", "next", "firing")
if h[1] ~= ARGV[2] or not h[5] or h[5] == "" then
  return 0
end
redis.call("LPUSH", KEYS[2], ARGV[3])
redis.call("LTRIM", KEYS[2], 0, tonumber(ARGV[6]) - 1)
local next_at = ARGV[4]
if h[2] ~= ARGV[5] then
  next_at = h[4]
end
redis.call("HSET", KEYS[1], "next", next_at, "firing", "", "until", "", "last", ARGV[3])
if h[3] == "1" then
  redis.call("ZREM", KEYS[3], ARGV[1])
else
  redis.call("ZADD", KEYS[3], next_at, ARGV[1])
end
return 1
