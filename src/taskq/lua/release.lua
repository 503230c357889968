-- release.lua: give a task back unharmed (graceful shutdown): its lane, original score; fenced.
--
-- KEYS[1]  leases       T:proc
-- ARGV[1]  shard tag T  ARGV[2] task id   ARGV[3] fencing token   ARGV[4..] task types
--
-- The claim does not count as an attempt (attempts - 1). Returns 1, or 0 when the token is stale.

--#include queue_lib

local tag, id, token = ARGV[1], ARGV[2], ARGV[3]
if not holds(tag, id, token) then
  return 0
end
local types = {}
for i = 4, #ARGV do
  types[#types + 1] = ARGV[i]
end
requeue(tag, id, types, -1)
return 1
