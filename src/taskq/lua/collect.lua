-- collect.lua: charge completed synchronous calls whose answer reached their intake.
--
-- KEYS[1]  w  calls to collect  T:collect
-- ARGV[1]  shard tag T       ARGV[2..] task ids
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   w  T:org:<org>            rw T:t:<id>
--
-- A completed call keeps its credits reserved until its intake has the answer in hand: then it is
-- charged here (credits and reservation down by its cost, "charged" recorded). One the reaper
-- refunded already (not collected in time: reap.lua) is not charged.
-- Returns one entry per id: 1 when charged now, 0 when not (refunded, or never waiting).

local tag = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call("ZREM", KEYS[1], id) == 1 then
    local t = redis.call("HMGET", k_task(tag, id), "org", "cost")
    local cost = tonumber(t[2] or "0")
    if t[1] then
      redis.call("HINCRBY", k_org(tag, t[1]), "credits", -cost)
      redis.call("HINCRBY", k_org(tag, t[1]), "reserved", -cost)
      redis.call("HSET", k_task(tag, id), "charged", cost)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
