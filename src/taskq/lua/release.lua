-- release.lua: give a task back unharmed (graceful shutdown): its lane, original score; fenced.
--
-- KEYS[1]  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)   ARGV[5] retention (s)
--
-- The claim does not count as an attempt (attempts - 1). A task whose cancel was requested while it
-- ran becomes CANCELED instead (a release is a cancellation safe point). Returns 1, or 0 when the
-- token is stale.

--#include queue_lib

local tag, id, token = ARGV[1], ARGV[2], ARGV[3]
if not holds(tag, id, token) then
  return 0
end
if not cancel_if_requested(tag, id, ARGV[4], tonumber(ARGV[5])) then
  requeue(tag, id, -1)
end
return 1
