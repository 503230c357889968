-- sched_delete.lua: delete one recurring schedule of an organization.
--
-- KEYS[1]  schedule       T:sched:<id>
-- KEYS[2]  recent runs    T:sched:<id>:runs
-- KEYS[3]  fire times     T:scheds
-- KEYS[4]  org schedules  T:org:<org>:scheds
-- ARGV[1]  schedule id    ARGV[2] org id
--
-- A firing under way finishes its batch (already admitted or not) and finds nothing to record.
-- Returns 1, or 0 when the schedule does not exist or belongs to another org.

if redis.call("HGET", KEYS[1], "org") ~= ARGV[2] then
  return 0
end
redis.call("DEL", KEYS[1], KEYS[2])
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("SREM", KEYS[4], ARGV[1])
return 1
