-- sched_save.lua: create or change one recurring schedule of an organization.
--
-- KEYS[1]  rw schedule       T:sched:<id>
-- KEYS[2]  w  fire times     T:scheds
-- KEYS[3]  w  org schedules  T:org:<org>:scheds
-- ARGV[1]  schedule id    ARGV[2] org id   ARGV[3] "create" or "update"
-- ARGV[4]  next fire time (ms)   ARGV[5] paused ("1" or "0")
-- ARGV[6..] field, value pairs to write (see taskq.schedules)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written): none
--
-- An update bumps the schedule's revision, so a firing under way when it lands records its run but
-- keeps the next fire time written here. While a firing is under way the schedule stays in T:scheds at
-- the end of that firing's claim (paused or not), so a firing whose worker died is still taken over.
-- Returns 1, or 0 when updating a schedule that does not exist or belongs to another org.

local id, org, mode, next_at, paused = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if mode == "update" and redis.call("HGET", KEYS[1], "org") ~= org then
  return 0
end
local fields = {"org", org, "next", next_at, "paused", paused}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call("HSET", KEYS[1], unpack(fields))
redis.call("HINCRBY", KEYS[1], "rev", 1)
redis.call("SADD", KEYS[3], id)
local firing = redis.call("HMGET", KEYS[1], "firing", "until")
if firing[1] and firing[1] ~= "" then
  redis.call("ZADD", KEYS[2], firing[2], id)
elseif paused == "1" then
  redis.call("ZREM", KEYS[2], id)
else
  redis.call("ZADD", KEYS[2], next_at, id)
end
return 1
