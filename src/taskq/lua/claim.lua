-- claim.lua: lease up to k queued tasks in strict priority order, round-robin between orgs.
--
-- KEYS[1]  leases        T:proc
-- KEYS[2]  retry waits   T:delayed
-- KEYS[3]  provider use  T:pinflight
-- KEYS[4]  fence counter T:fence
-- KEYS[5]  turn counter  T:rr
-- ARGV[1]  shard tag T   ARGV[2] now (ms)   ARGV[3] lease (ms)   ARGV[4] k   ARGV[5] promote limit
-- ARGV[6]  c = number of claimable task types, then c pairs (type, provider cap; -1 = no cap),
--          then every task type (to re-index an org's lanes)
--
-- First moves up to ARGV[5] due retries from T:delayed back to their lanes (original score).
-- Then, k times: among claimable types not at their cap, the head of every ready:<type>; the lowest
-- score wins (band = priority first, then the org's turn); an org heading several types takes its
-- oldest lane head. The task becomes PROCESSING under a new fencing token, leased in T:proc until
-- now + lease; the org takes a new turn (back of its band) or is parked at its concurrency.
--
-- Returns one entry per claimed task: {id, token, type, payload, org, prio, created, idem, webhook,
-- cost, attempts, started, batch} (attempts counts this claim; started is the first pickup).

--#include queue_lib

local tag, now, lease, k = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local c = tonumber(ARGV[6])
local claimable, types = {}, {}
for i = 0, c - 1 do
  claimable[#claimable + 1] = {ARGV[7 + 2 * i], tonumber(ARGV[8 + 2 * i])}
end
for i = 7 + 2 * c, #ARGV do
  types[#types + 1] = ARGV[i]
end

for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, tonumber(ARGV[5]))) do
  redis.call("ZREM", KEYS[2], id)
  local t = redis.call("HMGET", k_task(tag, id), "org", "type", "score", "status")
  if t[1] and t[4] == "QUEUED" then
    redis.call("ZADD", k_lane(tag, t[1], t[2]), t[3], id)
    lane_filled(tag, t[1], t[2])
    if redis.call("SISMEMBER", k_capped(tag), t[1]) == 0 then
      index_lane(tag, t[1], t[2], turn_of(tag, t[1]))
    end
  end
end

local function lane_head(org, ttype)
  return tonumber(redis.call("ZRANGE", k_lane(tag, org, ttype), 0, 0, "WITHSCORES")[2])
end

-- Within this call: provider use per type, and the head of each ready index (false: empty), read once
-- and forgotten when the index changes, so a claim costs a few commands rather than one per type.
local in_use, tops = {}, {}
local function used(ttype)
  if in_use[ttype] == nil then
    in_use[ttype] = tonumber(redis.call("HGET", KEYS[3], ttype) or "0")
  end
  return in_use[ttype]
end
local function top_of(ttype)
  if tops[ttype] == nil then
    local top = redis.call("ZRANGE", k_ready(tag, ttype), 0, 0, "WITHSCORES")
    tops[ttype] = top[1] and top or false
  end
  return tops[ttype] or {}
end
local function forget_org(org)
  for ttype, top in pairs(tops) do
    if top == false or top[1] == org then
      tops[ttype] = nil
    end
  end
end

-- The (org, type) to serve next, or nil.
local function pick()
  local org, ttype, score, head
  for _, ct in ipairs(claimable) do
    local cap = ct[2]
    if cap < 0 or used(ct[1]) < cap then
      local top = top_of(ct[1])
      if top[1] then
        local s = tonumber(top[2])
        if org == nil or s < score then
          org, ttype, score, head = top[1], ct[1], s, nil
        elseif s == score then
          -- Equal scores mean the same org (turns are unique): FIFO across its lanes.
          head = head or lane_head(org, ttype)
          local h = lane_head(top[1], ct[1])
          if h < head then
            org, ttype, head = top[1], ct[1], h
          end
        end
      end
    end
  end
  return org, ttype
end

local out = {}
local rounds = 0
while #out < k and rounds < k + 64 do
  rounds = rounds + 1
  local org, ttype = pick()
  if not org then
    break
  end
  local okey = k_org(tag, org)
  local o = redis.call("HMGET", okey, "inflight", "concurrency")
  local limit = tonumber(o[2] or "0")
  if tonumber(o[1] or "0") >= limit then
    park(tag, org, types)
    forget_org(org)
  else
    local id = redis.call("ZPOPMIN", k_lane(tag, org, ttype))[1]
    local tkey = k_task(tag, id)
    local token = redis.call("INCR", KEYS[4])
    local t = redis.call("HMGET", tkey, "prio", "attempts", "started")
    local prio = t[1]
    if t[3] and t[3] ~= "" then
      redis.call("HSET", tkey, "status", "PROCESSING", "token", token, "attempts", tonumber(t[2] or "0") + 1)
    else
      redis.call("HSET", tkey, "status", "PROCESSING", "token", token, "attempts", tonumber(t[2] or "0") + 1,
        "started", now)
    end
    redis.call("ZADD", KEYS[1], now + lease, id)
    local inflight = redis.call("HINCRBY", okey, "inflight", 1)
    redis.call("HINCRBY", okey, "queued", -1)
    redis.call("HINCRBY", okey, "q" .. prio, -1)
    redis.call("HINCRBY", KEYS[3], ttype, 1)
    in_use[ttype] = used(ttype) + 1
    count(tag, "claimed:" .. ttype)
    local turn = redis.call("INCR", KEYS[5])
    redis.call("HSET", k_turn(tag), org, turn)
    if inflight >= limit then
      park(tag, org, types)
    else
      index_org(tag, org, types, turn)
    end
    forget_org(org)
    out[#out + 1] = describe(tag, id)
  end
end
return out
