-- trim_listing.lua: drop the expired tasks at the head (oldest end) of an org's task listing.
--
-- KEYS[1]  rw listing   T:org:<org>:tasks
-- KEYS[2]  w  org hash  T:org:<org>
-- ARGV[1]  shard tag T   ARGV[2] at most this many entries looked at
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   r  T:t:<id>
--
-- Stops at the first task that still exists: positions stay stable (list_base counts what was
-- trimmed), and an expired task behind a live one waits until everything older has gone.
-- Returns the number of entries trimmed.

local tag = ARGV[1]
local ids = redis.call("LRANGE", KEYS[1], 0, tonumber(ARGV[2]) - 1)
local gone = 0
for _, id in ipairs(ids) do
  if redis.call("EXISTS", k_task(tag, id)) == 1 then
    break
  end
  gone = gone + 1
end
if gone > 0 then
  redis.call("LTRIM", KEYS[1], gone, -1)
  redis.call("HINCRBY", KEYS[2], "list_base", gone)
end
return gone
