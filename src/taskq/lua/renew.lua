-- renew.lua: extend the leases a worker still holds, all in one call.
--
-- KEYS[1]  w  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] new deadline (ms)   ARGV[3..] pairs (task id, fencing token)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   r  T:t:<id>
--
-- Only the current token holder renews. Returns the ids whose lease is lost (reaped, released, or
-- finished): the worker abandons those calls.

--#include queue_lib

local tag, deadline = ARGV[1], ARGV[2]
local lost, kept = {}, {}  -- kept: (deadline, id) pairs, extended with one ZADD per thousand
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if holds(tag, id, ARGV[i + 1]) then
    kept[#kept + 1] = deadline
    kept[#kept + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for from = 1, #kept, 2000 do
  redis.call("ZADD", KEYS[1], "XX", unpack(kept, from, math.min(from + 1999, #kept)))
end
return lost
