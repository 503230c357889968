-- queue_lib.lua: functions the scheduler scripts share; taskq.scheduler splices this file in where a
-- script says "--#include queue_lib". Loaded alone it only defines locals and does nothing.
--
-- Invariants every transition keeps (org hash T:org:<org>):
--   queued/q<p>  tasks of the org in its lanes plus those waiting in T:delayed (status QUEUED)
--   inflight     PROCESSING tasks of the org; pinflight[type] likewise per task type
--   reserved     sum of cost of QUEUED and PROCESSING tasks; credits drop only on COMPLETED
--   capped       an org is in T:capped (and absent from every ready index) iff inflight >= concurrency

--#include metrics_lib

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

-- Score the org in ready:<type> by its lane head's band and its turn, or drop it if the lane is empty
-- (T:org:<org>:types follows: it lists exactly the org's non-empty lanes).
local function index_lane(tag, org, ttype, turn)
  local head = redis.call("ZRANGE", k_lane(tag, org, ttype), 0, 0, "WITHSCORES")
  if head[1] then
    redis.call("ZADD", k_ready(tag, ttype), math.floor(tonumber(head[2]) / BAND) * BAND + turn, org)
  else
    redis.call("ZREM", k_ready(tag, ttype), org)
    redis.call("SREM", k_org_types(tag, org), ttype)
  end
end

-- Re-index every non-empty lane of the org; `types` is unused (kept for the callers' signature).
local function index_org(tag, org, types, turn)
  for _, ttype in ipairs(redis.call("SMEMBERS", k_org_types(tag, org))) do
    index_lane(tag, org, ttype, turn)
  end
end

local function park(tag, org, types)
  redis.call("SADD", k_capped(tag), org)
  for _, ttype in ipairs(redis.call("SMEMBERS", k_org_types(tag, org))) do
    redis.call("ZREM", k_ready(tag, ttype), org)
  end
end

-- A task is back in its lane: the lane is non-empty.
local function lane_filled(tag, org, ttype)
  redis.call("SADD", k_org_types(tag, org), ttype)
end

local settled = {}  -- orgs settled while counts are deferred: flush_queue() may unpark them

-- One call of the org fewer in flight; a parked org below its concurrency rejoins the ready indexes
-- (at once, or in flush_queue() while counts are deferred).
local function settle(tag, org, ttype, types)
  if deferred then
    hincr(k_org(tag, org), "inflight", -1)
    hincr(k_pinflight(tag), ttype, -1)
    settled[org] = true
    return
  end
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

-- The fencing check: the task's fields (token, status, then the names asked for) while token is the
-- current lease of a PROCESSING task, else nil. Every transition sets status and T:proc together, so
-- token and status are the whole check.
local function held(tag, id, token, ...)
  local t = redis.call("HMGET", k_task(tag, id), "token", "status", ...)
  if t[1] == token and t[2] == "PROCESSING" then
    return t
  end
  return nil
end

local function holds(tag, id, token)
  return held(tag, id, token) ~= nil
end

-- What finish() needs of a task, in held()'s order after token and status.
local FINISH_FIELDS = {"org", "idem", "webhook", "type", "started", "batch", "cost", "prio"}

-- sync: a synchronous call (taskq.calls) is a task of priority 11, above every async priority. When it
-- finishes, "<task id>\n<status>\n<result or error json>" is pushed to its intake process's inbox
-- T:inbox:<inbox> (a call admitted without one: "<status>\n<...>" to T:reply:<id>); the record and
-- the reply are kept SYNC_KEEP seconds. A completed call is charged only when its intake collects the
-- answer (collect.lua); one not collected within SYNC_COLLECT_MS is refunded by the reaper (reap.lua).
local SYNC_PRIORITY, SYNC_KEEP, SYNC_COLLECT_MS = "11", 300, 30000

-- A synchronous call whose client went away (cancel requested): `t` holds FINISH_FIELDS from held().
local function abandoned(tag, id, t)
  return t[10] == SYNC_PRIORITY and redis.call("HGET", k_task(tag, id), "cancel") == "1"
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
  lane_filled(tag, org, ttype)
  redis.call("HINCRBY", k_org(tag, org), "queued", 1)
  redis.call("HINCRBY", k_org(tag, org), "q" .. t[3], 1)
  settle(tag, org, ttype, types)
  if redis.call("SISMEMBER", k_capped(tag), org) == 0 then
    index_lane(tag, org, ttype, turn_of(tag, org))
  end
end

-- Finished tasks count toward their batch (done: {completed = n, failed = n, canceled = n}); the
-- batch's last task closes it and queues batch.completed.
local function batch_progress(tag, batch, done, charged, now, retention)
  local bkey = k_batch(tag, batch)
  local b = redis.call("HMGET", bkey, "admitted", "webhook", "org", "total", "created", "completed",
    "failed", "canceled", "charged")
  if not b[1] then
    return  -- the batch record expired
  end
  local counts = {completed = tonumber(b[6] or "0"), failed = tonumber(b[7] or "0"),
    canceled = tonumber(b[8] or "0")}
  for field, n in pairs(done) do
    redis.call("HINCRBY", bkey, field, n)
    counts[field] = counts[field] + n
  end
  if charged > 0 then
    redis.call("HINCRBY", bkey, "charged", charged)
  end
  if counts.completed + counts.failed + counts.canceled < tonumber(b[1]) then
    return
  end
  redis.call("HSET", bkey, "finished", now)
  redis.call("EXPIRE", bkey, retention)
  redis.call("EXPIRE", k_batch_ids(tag, batch), retention)
  if b[2] and b[2] ~= "" then
    local body = cjson.encode({type = "batch.completed", batchId = batch, total = tonumber(b[4]),
      admitted = tonumber(b[1]), counts = {COMPLETED = counts.completed, FAILED = counts.failed,
      CANCELED = counts.canceled}, creditsCharged = tonumber(b[9] or "0") + charged,
      createdAt = iso_ms(b[5]), finishedAt = iso_ms(now)})
    local delivery = "batch_" .. batch
    redis.call("HSET", k_delivery(tag, delivery), "task", "", "org", b[3], "url", b[2],
      "event", "msg_batch_" .. batch, "body", body, "attempts", 0, "state", "pending", "created", now)
    redis.call("ZADD", k_wh_due(tag), now, delivery)
  end
end

-- Last step of COMPLETED/FAILED/CANCELED: write the task's terminal fields (`fields`, a flat list),
-- count it, queue the webhook event `body` (outbox) unless told not to, start the retention clock,
-- move its batch on. The webhook's first delivery is written into the task hash with the terminal
-- fields (see delivery_record); the task's retention then starts when that delivery is final
-- (wh_record.lua), so nothing expires under a delivery still waiting. `t` holds FINISH_FIELDS from
-- held() (index 3 on), or nil to read them here. code/message describe a failure ("" otherwise);
-- charged is what the task was charged.
local batches = {}  -- batch -> {done = {status -> n}, charged = n, now = ms} while counts are deferred
local unleased, due = {}, {}  -- T:proc removals and T:wh:due additions while counts are deferred

local function finish(tag, id, now, retention, body, status, code, message, notify, t, fields, charged)
  local tkey = k_task(tag, id)
  if not t then
    t = redis.call("HMGET", tkey, "token", "status", unpack(FINISH_FIELDS))
  end
  local org, idem, webhook, ttype, started, batch = t[3], t[4], t[5], t[6], t[7], t[8]
  if deferred then
    unleased[#unleased + 1] = id
  else
    redis.call("ZREM", k_proc(tag), id)
  end
  local queued = webhook and webhook ~= "" and notify
  if queued then
    local delivery = first_delivery(id)
    local _, p = delivery_record(tag, delivery)
    for _, kv in ipairs({{"task", id}, {"org", org}, {"url", webhook}, {"event", "msg_" .. id},
        {"body", body}, {"attempts", 0}, {"state", "pending"}, {"created", now}}) do
      fields[#fields + 1] = p .. kv[1]
      fields[#fields + 1] = kv[2]
    end
    if deferred then
      due[#due + 1] = now
      due[#due + 1] = delivery
    else
      redis.call("ZADD", k_wh_due(tag), now, delivery)
    end
    fields[#fields + 1] = "wh_state"; fields[#fields + 1] = "pending"
    fields[#fields + 1] = "wh_last"; fields[#fields + 1] = delivery
  end
  redis.call("HSET", tkey, unpack(fields))
  if not queued then
    redis.call("EXPIRE", tkey, retention)
  end
  if idem and idem ~= "" then
    redis.call("EXPIRE", k_idem(tag, org, idem), retention)
  end
  if t[10] == SYNC_PRIORITY then  -- sync: wake the waiting intake with the outcome
    local body = ""
    for i = 1, #fields, 2 do
      if fields[i] == "result" or fields[i] == "error" then
        body = fields[i + 1]
      end
    end
    local inbox = redis.call("HGET", tkey, "inbox")
    if inbox then
      redis.call("RPUSH", k_inbox(tag, inbox), id .. "\n" .. status .. "\n" .. body)
      redis.call("EXPIRE", k_inbox(tag, inbox), SYNC_KEEP)
    else
      redis.call("RPUSH", k_reply(tag, id), status .. "\n" .. body)
      redis.call("EXPIRE", k_reply(tag, id), SYNC_KEEP)
    end
    redis.call("EXPIRE", tkey, SYNC_KEEP)
  end

  if status == "COMPLETED" then
    count(tag, "completed:" .. ttype)
    count_minute(tag, now, "completed")
  elseif status == "FAILED" then
    count(tag, "failed:" .. ttype .. ":" .. code)
    count_minute(tag, now, "failed")
    redis.call("LPUSH", k_failures(tag), cjson.encode({id = id, org = org, type = ttype, code = code,
      message = message, at = tonumber(now)}))
    redis.call("LTRIM", k_failures(tag), 0, 99)
  else
    count(tag, "canceled:" .. ttype)
  end
  if started and started ~= "" and status ~= "CANCELED" then
    count_latency(tag, ttype, tonumber(now) - tonumber(started))
  end
  if batch and batch ~= "" then
    local field = string.lower(status)
    if deferred then
      local b = batches[batch]
      if not b then
        b = {done = {}, charged = 0}
        batches[batch] = b
      end
      b.done[field] = (b.done[field] or 0) + 1
      b.charged = b.charged + (charged or 0)
      b.now = now
    else
      batch_progress(tag, batch, {[field] = 1}, charged or 0, now, retention)
    end
  end
end

-- Write what a call with deferred counts owes: counters, leases released, webhooks due, batch
-- progress, and parked orgs that are below their concurrency again.
local function flush_queue(tag, types, retention)
  flush_counts()
  for from = 1, #unleased, 1000 do
    redis.call("ZREM", k_proc(tag), unpack(unleased, from, math.min(from + 999, #unleased)))
  end
  for from = 1, #due, 1000 do
    redis.call("ZADD", k_wh_due(tag), unpack(due, from, math.min(from + 999, #due)))
  end
  for batch, b in pairs(batches) do
    batch_progress(tag, batch, b.done, b.charged, b.now, retention)
  end
  for org in pairs(settled) do
    if redis.call("SISMEMBER", k_capped(tag), org) == 1 then
      local o = redis.call("HMGET", k_org(tag, org), "inflight", "concurrency")
      if tonumber(o[1] or "0") < tonumber(o[2] or "0") then
        redis.call("SREM", k_capped(tag), org)
        index_org(tag, org, types, turn_of(tag, org))
      end
    end
  end
  unleased, due, batches, settled = {}, {}, {}, {}
end

-- The webhook body of a canceled task: what GET returns for it, without the webhook block.
local function canceled_body(tag, id, now)
  local t = redis.call("HMGET", k_task(tag, id), "type", "prio", "created", "idem", "cost", "started")
  local latency = cjson.null
  if t[6] and t[6] ~= "" then
    latency = tonumber(now) - tonumber(t[6])
  end
  return cjson.encode({
    task = {id = id, taskType = t[1], status = "CANCELED", priority = tonumber(t[2]),
      createdAt = iso_ms(t[3]), latencyMs = latency,
      idempotencyKey = (t[4] and t[4] ~= "") and t[4] or cjson.null},
    credits = {creditsToCharge = tonumber(t[5] or "0"), creditsCharged = 0},
    response = {error = {code = "TASK_CANCELED", message = "The task was canceled by request"}}})
end

-- Make a task CANCELED: release its credits, count it, webhook only if the org opted in.
local function cancel_task(tag, id, now, retention)
  local t = redis.call("HMGET", k_task(tag, id), "token", "status", unpack(FINISH_FIELDS))
  local org, cost = t[3], t[9]
  redis.call("HINCRBY", k_org(tag, org), "reserved", -tonumber(cost or "0"))
  local notify = redis.call("HGET", k_org(tag, org), "notify_canceled") == "1"
  local body = notify and canceled_body(tag, id, now) or ""
  local fields = {"status", "CANCELED", "finished", now, "charged", 0, "token", "",
    "error", cjson.encode({code = "TASK_CANCELED", message = "The task was canceled by request"})}
  finish(tag, id, now, retention, body, "CANCELED", "TASK_CANCELED",
    "The task was canceled by request", notify, t, fields, 0)
end

-- At a cancellation safe point (retry, release, expired lease): a task whose cancel was requested
-- while it ran becomes CANCELED instead of going back in line. True when it did.
local function cancel_if_requested(tag, id, types, now, retention)
  local t = redis.call("HMGET", k_task(tag, id), "org", "type", "cancel")
  if t[3] ~= "1" then
    return false
  end
  settle(tag, t[1], t[2], types)
  cancel_task(tag, id, now, retention)
  return true
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

-- One line in the task's attempt log (field "alog": JSON lines, oldest first) for an attempt that did
-- not end the task: a retried error or an expired lease. The last attempt is the task's own outcome.
local function log_attempt(tag, id, entry)
  local key = k_task(tag, id)
  local log = redis.call("HGET", key, "alog")
  local line = cjson.encode(entry)
  redis.call("HSET", key, "alog", (log and log ~= "") and (log .. "\n" .. line) or line)
end
