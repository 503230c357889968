-- release.lua: give a task back unharmed (graceful shutdown): its lane, original score; fenced.
--
-- KEYS[1]  -  leases       T:proc  (routes the call to its shard; used as the derived T:proc)
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)   ARGV[5] retention (s)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:org:<org>            rw T:t:<id>               rw T:lane:<org>:<type>
--   w  T:ready:<type>         w  T:idem:<org>:<key>     rw T:org:<org>:types
--   rw T:b:<id>               w  T:b:<id>:ids           w  T:wh:<id>
--   rw T:turn                 rw T:capped               w  T:pinflight
--   w  T:proc                 w  T:rr                   w  T:wh:due
--   w  T:metrics              w  T:stats:<minute>       w  T:failures
--   w  T:reply:<id>
--   w  T:inbox:<id>
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
