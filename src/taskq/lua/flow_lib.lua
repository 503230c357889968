-- flow_lib.lua: provider flow control shared by claim.lua and throttle.lua (taskq.flow describes it).
-- Loaded alone it only defines locals and does nothing.
--
-- A lane is a task type; a slot is one API key of a lane, named by its fingerprint. Each slot is paced
-- by a GCRA limiter (T:flow field "<TYPE>/<fp>:tat", the theoretical arrival time) at its rate now:
--   configured rate (the flow spec)  and/or  learned: the limit a 429 stated (lcap), and the AIMD rate
--   (lrate, cut by MD at a 429, then + AI_PER_S of itself per second), never above a known ceiling;
--   none of these: slow start (SS_RATE calls/s doubling every SS_DOUBLE_MS) until UNLIMITED, then
--   not paced at all.
-- A slot is closed while paused (pause > now), for good once its key was refused (auth), and, while its
-- quota is exhausted, open for one probe call every probe interval. A lane is closed while an operator
-- paused it. Times are the server's clock (TIME) so every machine paces against one clock; a flow spec
-- may carry an explicit clock (tests).
--
-- Tokens: a slot with a token rate (configured, or the limit the provider's x-ratelimit-*-tokens headers
-- stated: ltps) has a second GCRA over tokens (ttat) with no tolerance: a claim takes one call while
-- ttat <= now and reserves the tokens its calls use on average (tavg; one second's worth until a call
-- told); flow_note.lua charges what the call used (a debt when above the reservation). Over any window
-- a slot's calls start with at most the window's worth of tokens plus one call's.
--
-- Flow spec (JSON, one ARGV of claim.lua): {"lanes": {TYPE: [[fp, rate calls/s or 0, burst,
--   tokens/s or 0], ...]}, "probe": ms between quota probes, "ss": 1 for slow start, "clock": ms (optional)}

local SS_RATE, SS_DOUBLE_MS, UNLIMITED = 10, 100, 10000
local AI_PER_S, MD, MD_KNOWN, DECREASE_GAP_MS = 0.1, 0.7, 0.9, 1000
local MIN_RATE = 0.05
local TICK_MS = 50  -- a claim may take this much time's worth of calls at once (fewer, larger claims)
local FOREVER = 1e15  -- an operator's pause without an end
local BIG = 1e9
local SLOT_FIELDS = {"tat", "pause", "quota", "auth", "lrate", "lset", "lcap", "ss", "calls", "w", "wn",
  "pn", "ttat", "tavg", "ltps", "tok"}
local TAVG_WEIGHT = 0.2  -- weight of a call's tokens in the moving average a claim reserves

local function flow_clock(clock)
  if clock and clock ~= cjson.null and clock ~= "" then
    return tonumber(clock)
  end
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function slot_field(ttype, fp, name)
  return ttype .. "/" .. fp .. ":" .. name
end

-- The lane's state: its pause and its slots {fp, cfg, burst, <SLOT_FIELDS as numbers>, dirty}.
local function read_lane(fkey, ttype, slots)
  local names = {ttype .. ":pause"}
  for _, s in ipairs(slots) do
    for _, f in ipairs(SLOT_FIELDS) do
      names[#names + 1] = slot_field(ttype, s[1], f)
    end
  end
  local v = redis.call("HMGET", fkey, unpack(names))
  local lane = {type = ttype, pause = tonumber(v[1] or "0") or 0, slots = {}}
  local i = 2
  for _, s in ipairs(slots) do
    local st = {fp = s[1], cfg = tonumber(s[2]) or 0, burst = tonumber(s[3]) or 1, tcfg = tonumber(s[4]) or 0,
      dirty = {}}
    for _, f in ipairs(SLOT_FIELDS) do
      st[f] = tonumber(v[i])
      i = i + 1
    end
    lane.slots[#lane.slots + 1] = st
  end
  return lane
end

local function set(st, name, value)
  st[name] = value
  st.dirty[name] = true
end

-- The slot's rate now (calls/s), or nil when it is not paced. Starts slow start if it applies.
local function slot_rate(st, now, slow)
  local ceiling = nil
  if st.cfg > 0 then
    ceiling = st.cfg
  end
  if st.lcap and (not ceiling or st.lcap < ceiling) then
    ceiling = st.lcap
  end
  if st.lrate then
    local r = st.lrate * (1 + AI_PER_S * math.max(0, now - (st.lset or now)) / 1000)
    if ceiling then
      return math.min(r, ceiling)
    end
    if r < UNLIMITED then
      return r
    end
    return nil
  end
  if ceiling then
    return ceiling
  end
  if not slow then
    return nil
  end
  if not st.ss then
    set(st, "ss", now)
  end
  local r = SS_RATE * 2 ^ ((now - st.ss) / SS_DOUBLE_MS)
  if r < UNLIMITED then
    return r
  end
  return nil
end

-- The slot's token rate (tokens/s): the configured one or the stated one, the lower; nil: none.
local function slot_tps(st)
  local tps = st.tcfg > 0 and st.tcfg or nil
  if st.ltps and st.ltps > 0 and (not tps or st.ltps < tps) then
    tps = st.ltps
  end
  return tps
end

-- Tokens a claim reserves for one call: the moving average of what the slot's calls used, or one
-- second's worth until a call told.
local function slot_estimate(st, tps)
  return st.tavg or tps
end

-- Calls the token limit lets this slot start now: one while its bucket is not in debt (BIG: no limit).
local function token_room(st, now)
  local tps = slot_tps(st)
  if not tps or slot_estimate(st, tps) <= 0 then
    return BIG
  end
  if (st.ttat or 0) > now then
    return 0
  end
  return 1
end

-- GCRA of a rate and burst: (emission interval, tolerance) in ms.
local function gcra(r, burst)
  local t = 1000 / r
  return t, math.max((burst - 1) * t, TICK_MS)
end

-- Calls this slot may start now (BIG when not paced).
local function slot_room(st, now, slow)
  if st.auth == 1 then
    return 0
  end
  if (st.pause or 0) > now then
    return 0
  end
  if st.quota == 1 then
    return 1  -- one probe call
  end
  local r = slot_rate(st, now, slow)
  if not r then
    return token_room(st, now)
  end
  local t, tau = gcra(r, st.burst)
  local ahead = math.max(st.tat or 0, now) - now
  if ahead > tau then
    return 0
  end
  return math.min(math.floor((tau - ahead) / t) + 1, token_room(st, now))
end

-- When a closed slot may start calls again (ms), or nil (never by itself): a tick's worth of them at a
-- rate above one call a tick, not the first one. Reopening for one call made a drain claim one task a
-- claim call as fast as the limiter let calls through (slow start's first second: hundreds of claim
-- calls of one or two tasks, each costing Redis what a claim of thirty costs).
local function slot_reopens(st, now, slow)
  if st.auth == 1 then
    return nil
  end
  if (st.pause or 0) > now then
    return st.pause
  end
  local at = now
  local r = slot_rate(st, now, slow)
  if r then
    local t, tau = gcra(r, st.burst)
    at = math.max(st.tat or 0, now) - tau + (math.max(1, math.floor(TICK_MS / t)) - 1) * t
  end
  if slot_tps(st) and (st.ttat or 0) > at then
    at = st.ttat
  end
  return at
end

local function lane_room(lane, now, slow)
  if lane.pause > now then
    return 0
  end
  local room = 0
  for _, st in ipairs(lane.slots) do
    room = room + slot_room(st, now, slow)
  end
  return room
end

local function lane_reopens(lane, now, slow)
  if lane.pause > now then
    return lane.pause < FOREVER and lane.pause or nil
  end
  local soonest = nil
  for _, st in ipairs(lane.slots) do
    local at = slot_reopens(st, now, slow)
    if at and (not soonest or at < soonest) then
      soonest = at
    end
  end
  return soonest
end

-- Count n calls of a slot: in all (calls) and per second (wn this second w, pn the one before).
local function slot_count(st, now, n)
  local sec = math.floor(now / 1000)
  if st.w ~= sec then
    set(st, "pn", st.w == sec - 1 and (st.wn or 0) or 0)
    set(st, "w", sec)
    set(st, "wn", 0)
  end
  set(st, "wn", (st.wn or 0) + n)
  set(st, "calls", (st.calls or 0) + n)
end

-- Take one call of the lane: the slot with room that is least ahead (then least used). Returns its
-- fingerprint, "1" for a quota probe ("" otherwise) and the tokens reserved, or nil when the lane has
-- no room.
local function lane_take(lane, now, slow, probe_ms)
  if lane.pause > now then
    return nil
  end
  local best, best_score = nil, nil
  for _, st in ipairs(lane.slots) do
    if slot_room(st, now, slow) > 0 then
      local score = now
      if st.tat and st.quota ~= 1 and slot_rate(st, now, slow) then
        score = math.max(st.tat, now)
      end
      if not best or score < best_score or (score == best_score and (st.calls or 0) < (best.calls or 0)) then
        best, best_score = st, score
      end
    end
  end
  if not best then
    return nil
  end
  local probe = ""
  if best.quota == 1 then
    set(best, "pause", now + probe_ms)
    probe = "1"
  else
    local r = slot_rate(best, now, slow)
    if r then
      local t = gcra(r, best.burst)
      set(best, "tat", math.max(best.tat or 0, now) + t)
    end
  end
  local reserved = 0
  local tps = slot_tps(best)
  if tps and probe == "" then
    reserved = slot_estimate(best, tps)
    set(best, "ttat", math.max(best.ttat or 0, now) + reserved * 1000 / tps)
  end
  slot_count(best, now, 1)
  return best.fp, probe, reserved
end

-- Take n calls of a lane whose one slot is not paced at all (no rate, no token limit, no pause, no
-- probe): each would be lane_take's same slot with nothing reserved, so they are counted at once.
-- Returns the slot's fingerprint, or nil when the calls must be taken one by one (lane_take).
local function lane_take_unpaced(lane, now, slow, n)
  local st = lane.slots[1]
  if #lane.slots ~= 1 or lane.pause > now or slot_room(st, now, slow) < BIG then
    return nil
  end
  slot_count(st, now, n)
  return st.fp
end

-- A call of this slot ended: charge the tokens it used (nil: unknown, none) against what its claim
-- reserved; learn the slot's tokens per call.
local function slot_charge(st, now, used, reserved)
  local tps = slot_tps(st)
  if tps and (used or reserved > 0) then
    local base = st.ttat or now
    if reserved <= 0 then
      base = math.max(base, now)
    end
    set(st, "ttat", base + ((used or 0) - reserved) * 1000 / tps)
  end
  if used then
    set(st, "tavg", st.tavg and st.tavg + TAVG_WEIGHT * (used - st.tavg) or used)
    set(st, "tok", (st.tok or 0) + used)
  end
end

-- The HSET arguments of every changed slot field of these lanes (and nothing when none changed).
local function lane_writes(lanes, out)
  for _, lane in pairs(lanes) do
    for _, st in ipairs(lane.slots) do
      for name in pairs(st.dirty) do
        out[#out + 1] = slot_field(lane.type, st.fp, name)
        local v = st[name]  -- counters and seconds are whole: %d is far cheaper than printf's %.17g
        out[#out + 1] = v == math.floor(v) and math.abs(v) < 1e15 and string.format("%d", v)
          or string.format("%.17g", v)
      end
      st.dirty = {}
    end
  end
  return out
end
