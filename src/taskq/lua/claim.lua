-- claim.lua: lease up to k queued tasks in strict priority order, round-robin between orgs.
--
-- KEYS[1]  w  leases        T:proc
-- KEYS[2]  rw retry waits   T:delayed
-- KEYS[3]  rw provider use  T:pinflight
-- KEYS[4]  rw fence counter T:fence
-- KEYS[5]  rw turn counter  T:rr
-- KEYS[6]  rw flow control  T:flow
-- ARGV[1]  shard tag T   ARGV[2] now (ms)   ARGV[3] lease (ms)   ARGV[4] k   ARGV[5] promote limit
-- ARGV[6]  c = number of claimable task types, then c pairs (type, provider cap; -1 = no cap),
--          then the flow spec (JSON, see flow_lib.lua; "" = no flow control)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:org:<org>            rw T:t:<id>               rw T:lane:<org>:<type>
--   rw T:ready:<type>         rw T:org:<org>:types      rw T:turn
--   rw T:capped               w  T:rr                   w  T:metrics
--
-- First moves up to ARGV[5] due retries from T:delayed back to their lanes (original score).
-- Then, k times: among claimable types not at their cap, the head of every ready:<type>; the lowest
-- score wins (band = priority first, then the org's turn); an org heading several types takes its
-- oldest lane head. The task becomes PROCESSING under a new fencing token, leased in T:proc until
-- now + lease; the org takes a new turn (back of its band) or is parked at its concurrency.
--
-- Counters (org inflight/queued/q<p>, provider use, fence, turns, metrics) are kept in this call's
-- memory and written once at the end, so a claim of k tasks costs about six commands per task; an
-- org that is the only candidate takes its run of tasks with one ZPOPMIN (two commands per task).
--
-- Flow control (flow_lib.lua): a type is claimable only while its lane has room now (a key whose
-- limiter, pause and quota allow a call); each claimed task takes a call of one key.
--
-- Returns one entry per claimed task: {id, token, type, payload, org, prio, created, idem, webhook,
-- cost, attempts, started, batch, key fingerprint, probe, tokens reserved} (attempts counts this claim;
-- started is the first pickup; probe "1" for a quota probe; tokens reserved by the key's token limit,
-- "0" for none), then, last, the ms until a lane that holds back queued tasks reopens (-1: none does).

--#include queue_lib
--#include flow_lib

local tag, now, lease, k = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local c = tonumber(ARGV[6])
local claimable, ct_cap = {}, {}
for i = 0, c - 1 do
  claimable[#claimable + 1] = {ARGV[7 + 2 * i], tonumber(ARGV[8 + 2 * i])}
  ct_cap[ARGV[7 + 2 * i]] = tonumber(ARGV[8 + 2 * i])
end

-- Flow control: each lane's state read once when first asked, written back once at the end.
local spec = ARGV[7 + 2 * c] ~= "" and cjson.decode(ARGV[7 + 2 * c]) or {lanes = {}}
local fnow = next(spec.lanes) and flow_clock(spec.clock) or 0
local slow, probe_ms = spec.ss == 1, tonumber(spec.probe or 0)
local flow_lanes = {}
local function lane_of(ttype)
  local slots = spec.lanes[ttype]
  if not slots then
    return nil
  end
  if not flow_lanes[ttype] then
    flow_lanes[ttype] = read_lane(KEYS[6], ttype, slots)
  end
  return flow_lanes[ttype]
end
local function room(ttype)
  local lane = lane_of(ttype)
  return lane and lane_room(lane, fnow, slow) or BIG
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
local function top_of(ttype)  -- {org, score[, runner-up, its score]}
  if tops[ttype] == nil then
    local top = redis.call("ZRANGE", k_ready(tag, ttype), 0, 1, "WITHSCORES")
    tops[ttype] = top[1] and top or false
  end
  return tops[ttype] or {}
end
-- An index whose head was this org changed when the org took a new turn or was parked. (An empty
-- index stays empty: a claim only moves orgs back within the indexes they are in.)
local function forget_org(org)
  for ttype, top in pairs(tops) do
    if top and top[1] == org then
      tops[ttype] = nil
    end
  end
end

-- The orgs this call touches: inflight and concurrency read once, the claims to write back, the
-- org's non-empty lanes (T:org:<org>:types) and the band of each lane's head.
local orgs = {}
local function org_state(org)
  local s = orgs[org]
  if not s then
    local o = redis.call("HMGET", k_org(tag, org), "inflight", "concurrency")
    s = {inflight = tonumber(o[1] or "0"), limit = tonumber(o[2] or "0"), claimed = 0, prios = {},
      lanes = nil}
    orgs[org] = s
  end
  return s
end
local function lanes_of(org, s)
  if not s.lanes then
    s.lanes = {}
    for _, ttype in ipairs(redis.call("SMEMBERS", k_org_types(tag, org))) do
      s.lanes[ttype] = true  -- band unknown until read
    end
  end
  return s.lanes
end

-- True when org, at the head of ready:<ttype>, is the only candidate of every claimable type: then
-- its next tasks come from this lane in lane order whatever turns it takes, and it may take a run.
local function alone(org, ttype)
  for _, ct in ipairs(claimable) do
    local top = top_of(ct[1])
    if top[1] and (ct[1] ~= ttype or top[1] ~= org or top[3]) then
      return false
    end
  end
  return true
end

-- The (org, type) to serve next, or nil.
local function pick()
  local org, ttype, score, head
  for _, ct in ipairs(claimable) do
    local cap = ct[2]
    if (cap < 0 or used(ct[1]) < cap) and top_of(ct[1])[1] and room(ct[1]) > 0 then
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

-- Numbers are formatted with %d, once where they can be: a number handed to redis.call or tostring()
-- is formatted by printf's %.14g, one of the dearest steps per task.
local deadline, now_text = string.format("%d", now + lease), string.format("%d", now)
local fence = tonumber(redis.call("GET", KEYS[4]) or "0")
local rr = tonumber(redis.call("GET", KEYS[5]) or "0")
local turns, leased, per_type = {}, {}, {}
local out = {}
local rounds = 0
while #out < k and rounds < k + 64 do
  rounds = rounds + 1
  local org, ttype = pick()
  if not org then
    break
  end
  local s = org_state(org)
  if s.inflight >= s.limit then
    park(tag, org)
    forget_org(org)
  else
    local lanes = lanes_of(org, s)
    local lane = k_lane(tag, org, ttype)
    local n = 1
    if alone(org, ttype) then  -- a run: as many as the call, the org and the provider allow
      n = math.min(k - #out, s.limit - s.inflight)
      if ct_cap[ttype] >= 0 then
        n = math.min(n, ct_cap[ttype] - used(ttype))
      end
      n = math.min(n, room(ttype))
    end
    local popped = redis.call("ZPOPMIN", lane, n)
    local unpaced = lane_of(ttype) and lane_take_unpaced(lane_of(ttype), fnow, slow, #popped / 2)
    for i = 1, #popped, 2 do
      local id = popped[i]
      local fp, probe, reserved = unpaced or "", "", 0
      if lane_of(ttype) and not unpaced then
        fp, probe, reserved = lane_take(lane_of(ttype), fnow, slow, probe_ms)
        if not fp then
          -- The limiter refused this call: room() sums a run's calls at once, the takes add them up one
          -- by one, and at an exact edge their roundings differ. The rest of the run goes back in line.
          for j = i, #popped, 2 do
            redis.call("ZADD", lane, popped[j + 1], popped[j])
          end
          break
        end
        probe, reserved = probe or "", reserved or 0
      end
      local tkey = k_task(tag, id)
      fence = fence + 1
      local token = string.format("%d", fence)  -- tostring() would round past 14 digits
      -- The lane is the task's org and type: those two are not read again.
      local t = redis.call("HMGET", tkey, "payload", "prio", "created", "idem", "webhook", "cost", "attempts",
        "started", "batch")
      local attempts = t[7] and string.format("%d", tonumber(t[7]) + 1) or "1"
      local started = t[8]
      if started and started ~= "" then
        redis.call("HSET", tkey, "status", "PROCESSING", "token", token, "attempts", attempts)
      else
        started = now_text
        redis.call("HSET", tkey, "status", "PROCESSING", "token", token, "attempts", attempts,
          "started", started)
      end
      leased[#leased + 1] = deadline
      leased[#leased + 1] = id
      s.inflight = s.inflight + 1
      s.claimed = s.claimed + 1
      s.prios[t[2]] = (s.prios[t[2]] or 0) + 1
      in_use[ttype] = used(ttype) + 1
      per_type[ttype] = (per_type[ttype] or 0) + 1
      rr = rr + 1
      turns[org] = rr
      out[#out + 1] = {id, token, ttype, t[1] or "", org, t[2] or "", t[3] or "", t[4] or "", t[5] or "",
        t[6] or "", attempts, started, t[9] or "", fp, probe,
        reserved == 0 and "0" or string.format("%.17g", reserved)}
    end
    -- The popped lane's new head (or none: the lane left the org's types).
    local head = redis.call("ZRANGE", lane, 0, 0, "WITHSCORES")
    if head[1] then
      lanes[ttype] = math.floor(tonumber(head[2]) / BAND)
    else
      lanes[ttype] = nil
      redis.call("ZREM", k_ready(tag, ttype), org)
      redis.call("SREM", k_org_types(tag, org), ttype)
    end
    if s.inflight >= s.limit then
      park(tag, org)
    else
      for lt, band in pairs(lanes) do  -- back of its band in every ready index it is in
        if band == true then
          band = math.floor(lane_head(org, lt) / BAND)
          lanes[lt] = band
        end
        redis.call("ZADD", k_ready(tag, lt), band * BAND + rr, org)
      end
    end
    forget_org(org)
  end
end

-- Write back what this call counted.
if #out > 0 then
  redis.call("SET", KEYS[4], string.format("%d", fence))
  redis.call("SET", KEYS[5], string.format("%d", rr))
  local turn_fields = {}
  for org, turn in pairs(turns) do
    turn_fields[#turn_fields + 1] = org
    turn_fields[#turn_fields + 1] = turn
  end
  redis.call("HSET", k_turn(tag), unpack(turn_fields))
  for from = 1, #leased, 1000 do
    redis.call("ZADD", KEYS[1], unpack(leased, from, math.min(from + 999, #leased)))
  end
  local d = deferral()
  for org, s in pairs(orgs) do
    if s.claimed > 0 then
      local okey = k_org(tag, org)
      hincr(d, okey, "inflight", s.claimed)
      hincr(d, okey, "queued", -s.claimed)
      for prio, n in pairs(s.prios) do
        hincr(d, okey, "q" .. prio, -n)
      end
    end
  end
  for ttype, n in pairs(per_type) do
    hincr(d, KEYS[3], ttype, n)
    count(d, tag, "claimed:" .. ttype, n)
  end
  flush_counts(d)
end

-- Flow control: write the lanes' new state back; tell the caller when a lane holding back queued
-- tasks reopens.
local flow_fields = lane_writes(flow_lanes, {})
if #flow_fields > 0 then
  redis.call("HSET", KEYS[6], unpack(flow_fields))
end
local reopens = -1
for _, ct in ipairs(claimable) do
  -- A lane already read is asked for room first: its ready index is read again only when it is shut.
  local lane = flow_lanes[ct[1]]
  if lane == nil then
    lane = top_of(ct[1])[1] and lane_of(ct[1])
  end
  if lane and lane_room(lane, fnow, slow) == 0 and top_of(ct[1])[1] then
    local at = lane_reopens(lane, fnow, slow)
    if at then
      local wait = math.max(0, math.ceil(at - fnow))
      if reopens < 0 or wait < reopens then
        reopens = wait
      end
    end
  end
end
out[#out + 1] = reopens
return out
