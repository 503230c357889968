-- list_page.lua: one page of an org's task listing, newest first, read in one step with the position
-- of the list's head (the trimmer moves it), so a cursor keeps its meaning while entries are trimmed.
--
-- KEYS[1]  r  listing   T:org:<org>:tasks
-- KEYS[2]  r  org hash  T:org:<org>
-- ARGV[1]  upper: absolute position one past the newest entry wanted ("" = the newest)
-- ARGV[2]  page size
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written): none
--
-- Returns {lo, id_lo, ..., id_(upper-1)}: the ids at absolute positions lo .. upper-1, oldest first
-- (an empty page when nothing lies below upper).

local base = tonumber(redis.call("HGET", KEYS[2], "list_base") or "0")
local top = base + redis.call("LLEN", KEYS[1])
local upper = top
if ARGV[1] ~= "" then
  upper = math.min(tonumber(ARGV[1]), top)
end
local lo = math.max(base, upper - tonumber(ARGV[2]))
if lo >= upper then
  return {lo}
end
local out = {lo}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], lo - base, upper - 1 - base)) do
  out[#out + 1] = id
end
return out
