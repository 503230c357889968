-- sched_delete.lua: delete one recurring schedule of an organization.
--
-- KEYS[1]  rw schedule       T:sched:<id>
-- KEYS[2]  w  recent runs    T:sched:<id>:runs
-- KEYS[3]  w  fire times     T:scheds
-- KEYS[4]  w  org schedules  T:org:<org>:scheds
-- ARGV[1]  schedule id    ARGV[2] org id
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written): none
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
