-- throttle.lua: a provider refused a call for a reason that is not the task's (rate limit, quota, a
-- refused key of a pool): the key's slot is paused for every worker and the task goes back to its
-- place in line without spending an attempt; fenced.
--
-- KEYS[1]  -  leases        T:proc  (routes the call to its shard; used as the derived T:proc)
-- KEYS[2]  rw flow control  T:flow
-- ARGV[1]  shard tag T   ARGV[2] task id   ARGV[3] fencing token   ARGV[4] now (ms)   ARGV[5] retention (s)
-- ARGV[6]  kind: "rate" | "quota" | "auth"
-- ARGV[7]  key fingerprint   ARGV[8] its configured rate (calls/s, 0 = none)   ARGV[9] its burst
-- ARGV[10] wait the provider asked for (ms; "" = none: 1 s)   ARGV[11] limit it stated (calls/s; "")
-- ARGV[12] the provider's message   ARGV[13] give up after (ms of rate limiting)   ARGV[14] probe (ms)
-- ARGV[15] the lane's key fingerprints, comma-separated   ARGV[16] clock (ms; "" = the server's)
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
--   rate   pause the key until the wait ends; cut its learned rate (AIMD, at most once a second: by MD,
--          or to the limit the provider states if it was above it, else by MD_KNOWN); the task waits in
--          line. A task rate-limited for longer than the give-up time is not requeued.
--   quota  the key stops (quota "1") with the provider's message; one probe call per probe interval.
--   auth   the key leaves the pool for good (auth "1"), unless it is the lane's last key.
--
-- Returns 1 (done: the task is QUEUED again, or CANCELED if its cancel was requested), 0 when the token
-- is stale, 2 when the caller must fail the task instead (gave up waiting; no other key left).

--#include queue_lib
--#include flow_lib

local tag, id, token, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local kind, fp = ARGV[6], ARGV[7]
if not holds(tag, id, token) then
  return 0
end
local ttype = redis.call("HGET", k_task(tag, id), "type")
local fnow = flow_clock(ARGV[16])
local lane = read_lane(KEYS[2], ttype, {{fp, ARGV[8], ARGV[9]}})
local st = lane.slots[1]
local give_up = false

if kind == "rate" then
  local wait = tonumber(ARGV[10]) or 1000
  set(st, "pause", math.max(st.pause or 0, fnow + wait))
  local stated = tonumber(ARGV[11])
  local r = slot_rate(st, fnow, st.ss ~= nil)  -- the rate in force when this call started
  if not r then  -- not paced until now: start from what it did in the last second
    r = math.max(st.pn or 0, st.wn or 0, 1)
  end
  if stated and stated > 0 then
    set(st, "lcap", stated)
  end
  if not st.lset or fnow - st.lset >= DECREASE_GAP_MS then
    if st.lcap and r > st.lcap then  -- above the limit the provider states: back to it
      r = st.lcap
    elseif st.lcap then  -- at or under it: a burst was refused, step down a little
      r = r * MD_KNOWN
    else
      r = r * MD
    end
    set(st, "lrate", math.max(MIN_RATE, r))
    set(st, "lset", fnow)
  end
  set(st, "n429", (st.n429 or 0) + 1)
  redis.call("HSET", KEYS[2], slot_field(ttype, fp, "why"), ARGV[12])
  local since = tonumber(redis.call("HGET", k_task(tag, id), "rlsince") or "")
  if not since then
    redis.call("HSET", k_task(tag, id), "rlsince", now)
  elseif tonumber(now) - since > tonumber(ARGV[13]) then
    give_up = true
  end
elseif kind == "quota" then
  set(st, "quota", 1)
  set(st, "pause", fnow + tonumber(ARGV[14]))
  redis.call("HSET", KEYS[2], slot_field(ttype, fp, "why"), ARGV[12])
elseif kind == "auth" then
  local others = 0
  for other in string.gmatch(ARGV[15], "[^,]+") do
    if other ~= fp and redis.call("HGET", KEYS[2], slot_field(ttype, other, "auth")) ~= "1" then
      others = others + 1
    end
  end
  if others == 0 then
    give_up = true
  else
    set(st, "auth", 1)
    redis.call("HSET", KEYS[2], slot_field(ttype, fp, "why"), ARGV[12])
  end
end

local fields = lane_writes({lane}, {})
if #fields > 0 then
  redis.call("HSET", KEYS[2], unpack(fields))
end
if give_up then
  return 2
end
if not cancel_if_requested(tag, id, now, tonumber(ARGV[5])) then
  requeue(tag, id, -1)
end
return 1
