-- flow_note.lua: what upstream responses said about a key of a lane, noted after its calls ended (flow
-- control, taskq.flow): the limits their x-ratelimit-* headers state, a pause until a call is allowed
-- again when none remained, and the tokens each call used, charged to the key's token limit (flow_lib.lua).
--
-- KEYS[1]  rw flow control  T:flow
-- ARGV[1]  clock (ms; "" = the server's)
-- ARGV[2..] notes of 10 values each: task type, key fingerprint, configured rate (calls/s, 0 = none),
--          burst, configured token rate (tokens/s, 0 = none), stated limit (calls/s; "" = none stated),
--          stated token limit (tokens/s; ""), pause (ms from now; ""), tokens the call used ("" =
--          unknown), tokens its claim reserved
--
-- A stated limit caps the key's rate as a 429's does (lcap, ltps); the key is paused until the pause
-- ends, never shortened. Returns one 1 per note.

--#include flow_lib

local fnow = flow_clock(ARGV[1])
local out = {}
for i = 2, #ARGV, 10 do
  local ttype, fp = ARGV[i], ARGV[i + 1]
  local lane = read_lane(KEYS[1], ttype, {{fp, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}})
  local st = lane.slots[1]
  local lcap, ltps, wait = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  if lcap and lcap > 0 and st.lcap ~= lcap then
    set(st, "lcap", lcap)
  end
  if ltps and ltps > 0 and st.ltps ~= ltps then
    set(st, "ltps", ltps)
  end
  if wait and wait > 0 and (st.pause or 0) < fnow + wait then
    set(st, "pause", fnow + wait)
    redis.call("HSET", KEYS[1], slot_field(ttype, fp, "why"), "the provider said none remained")
  end
  slot_charge(st, fnow, tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9]) or 0)
  local fields = lane_writes({lane}, {})
  if #fields > 0 then
    redis.call("HSET", KEYS[1], unpack(fields))
  end
  out[#out + 1] = 1
end
return out
