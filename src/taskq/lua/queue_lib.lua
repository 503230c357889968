-- queue_lib.lua: functions the scheduler scripts share; taskq.scheduler splices this file in where a
-- script says "--#include queue_lib". Loaded alone it only defines locals and does nothing.
--
-- Invariants every transition keeps (org hash T:org:<org>):
--   queued/q<p>  tasks of the org in its lanes plus those waiting in T:delayed (status QUEUED)
--   inflight     PROCESSING tasks of the org; pinflight[type] likewise per task type
--   reserved     sum of cost of QUEUED and PROCESSING tasks; credits drop only on COMPLETED
--   capped       an org is in T:capped (and absent from every ready index) iff inflight >= concurrency

local BAND = 1099511627776

-- The org's round-robin turn; an org without one starts at the back of the line.
local function turn_of(tag, org)
  local turn = redis.call("HGET", k_turn(tag), org)
  if not turn then
    turn = redis.call("INCR", k_rr(tag))
    redis.call("HSET", k_turn(tag), org, turn)
  end
  return tonumber(turn)
end

-- Score the org in ready:<type> by its lane head's band and its turn, or drop it if the lane is empty.
local function index_lane(tag, org, ttype, turn)
  local head = redis.call("ZRANGE", k_lane(tag, org, ttype), 0, 0, "WITHSCORES")
  if head[1] then
    redis.call("ZADD", k_ready(tag, ttype), math.floor(tonumber(head[2]) / BAND) * BAND + turn, org)
  else
    redis.call("ZREM", k_ready(tag, ttype), org)
  end
end

local function index_org(tag, org, types, turn)
  for _, ttype in ipairs(types) do
    index_lane(tag, org, ttype, turn)
  end
end

local function park(tag, org, types)
  redis.call("SADD", k_capped(tag), org)
  for _, ttype in ipairs(types) do
    redis.call("ZREM", k_ready(tag, ttype), org)
  end
end

-- One call of the org fewer in flight; a parked org below its concurrency rejoins the ready indexes.
local function settle(tag, org, ttype, types)
  local inflight = redis.call("HINCRBY", k_org(tag, org), "inflight", -1)
  redis.call("HINCRBY", k_pinflight(tag), ttype, -1)
  if redis.call("SISMEMBER", k_capped(tag), org) == 1 then
    local limit = tonumber(redis.call("HGET", k_org(tag, org), "concurrency") or "0")
    if inflight < limit then
      redis.call("SREM", k_capped(tag), org)
      index_org(tag, org, types, turn_of(tag, org))
    end
  end
end

-- True while token is the current lease of a PROCESSING task (the fencing check).
local function holds(tag, id, token)
  local t = redis.call("HMGET", k_task(tag, id), "token", "status")
  return t[1] == token and t[2] == "PROCESSING" and redis.call("ZSCORE", k_proc(tag), id) ~= false
end

-- A leased task goes back to its lane at its original score (its place in line), QUEUED again.
local function requeue(tag, id, types, attempts_delta)
  local t = redis.call("HMGET", k_task(tag, id), "org", "type", "prio", "score")
  local org, ttype = t[1], t[2]
  redis.call("ZREM", k_proc(tag), id)
  redis.call("HSET", k_task(tag, id), "status", "QUEUED", "token", "")
  if attempts_delta ~= 0 then
    redis.call("HINCRBY", k_task(tag, id), "attempts", attempts_delta)
  end
  redis.call("ZADD", k_lane(tag, org, ttype), t[4], id)
  redis.call("HINCRBY", k_org(tag, org), "queued", 1)
  redis.call("HINCRBY", k_org(tag, org), "q" .. t[3], 1)
  settle(tag, org, ttype, types)
  if redis.call("SISMEMBER", k_capped(tag), org) == 0 then
    index_lane(tag, org, ttype, turn_of(tag, org))
  end
end

-- Last step of COMPLETED/FAILED: queue the webhook (outbox), start the retention clock.
local function finish(tag, id, now, retention, delivery, body)
  local t = redis.call("HMGET", k_task(tag, id), "org", "idem", "webhook")
  local org, idem, webhook = t[1], t[2], t[3]
  redis.call("ZREM", k_proc(tag), id)
  if webhook and webhook ~= "" then
    redis.call("HSET", k_delivery(tag, delivery), "task", id, "org", org, "url", webhook,
      "event", "msg_" .. id, "body", body, "attempts", 0, "state", "pending", "created", now)
    redis.call("ZADD", k_wh_due(tag), now, delivery)
    redis.call("HSET", k_task(tag, id), "wh_state", "pending", "wh_last", delivery)
    redis.call("RPUSH", k_task_deliveries(tag, id), delivery)
    redis.call("EXPIRE", k_task_deliveries(tag, id), retention)
  end
  redis.call("EXPIRE", k_task(tag, id), retention)
  if idem and idem ~= "" then
    redis.call("EXPIRE", k_idem(tag, org, idem), retention)
  end
  redis.call("ZADD", k_done(tag), now, id)
  redis.call("ZREMRANGEBYSCORE", k_done(tag), "-inf", "(" .. (tonumber(now) - retention * 1000))
end

-- The fields a worker needs to run a task, in the order taskq.scheduler.Claimed reads them.
local function describe(tag, id)
  local t = redis.call("HMGET", k_task(tag, id), "token", "type", "payload", "org", "prio", "created",
    "idem", "webhook", "cost", "attempts", "started", "batch")
  local out = {id}
  for i = 1, 12 do
    out[i + 1] = t[i] or ""
  end
  return out
end
