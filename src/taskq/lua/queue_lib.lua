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

-- Re-index every non-empty lane of the org.
local function index_org(tag, org, turn)
  for _, ttype in ipairs(redis.call("SMEMBERS", k_org_types(tag, org))) do
    index_lane(tag, org, ttype, turn)
  end
end

local function park(tag, org)
  redis.call("SADD", k_capped(tag), org)
  for _, ttype in ipairs(redis.call("SMEMBERS", k_org_types(tag, org))) do
    redis.call("ZREM", k_ready(tag, ttype), org)
  end
end

-- A task is back in its lane: the lane is non-empty.
local function lane_filled(tag, org, ttype)
  redis.call("SADD", k_org_types(tag, org), ttype)
end

-- A deferral (metrics_lib) for queue transitions: besides counts, the leases to release (unleased),
-- the webhooks due ({score, id, ...}), batch progress (batch -> {done = {status -> n}, charged = n,
-- now = ms}) and the orgs settled, which flush_queue() may unpark.
local function queue_deferral()
  local d = deferral()
  d.unleased, d.due, d.batches, d.settled = {}, {}, {}, {}
  return d
end

-- One call of the org fewer in flight (n calls of one type when d defers); a parked org below its
-- concurrency rejoins the ready indexes (at once, or in flush_queue() when d defers).
local function settle(d, tag, org, ttype, n)
  if d then
    hincr(d, k_org(tag, org), "inflight", -(n or 1))
    hincr(d, k_pinflight(tag), ttype, -(n or 1))
    d.settled[org] = true
    return
  end
  local inflight = redis.call("HINCRBY", k_org(tag, org), "inflight", -1)
  redis.call("HINCRBY", k_pinflight(tag), ttype, -1)
  if redis.call("SISMEMBER", k_capped(tag), org) == 1 then
    local limit = tonumber(redis.call("HGET", k_org(tag, org), "concurrency") or "0")
    if inflight < limit then
      redis.call("SREM", k_capped(tag), org)
      index_org(tag, org, turn_of(tag, org))
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
local function requeue(tag, id, attempts_delta)
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
  settle(AT_ONCE, tag, org, ttype)
  if redis.call("SISMEMBER", k_capped(tag), org) == 0 then
    index_lane(tag, org, ttype, turn_of(tag, org))
  end
end

-- Finished tasks count toward their batch (done: {completed = n, failed = n, canceled = n}); the
-- batch's last task closes it and queues its batch.completed event, whose body taskq.deliveries builds
-- from the batch record when it is first sent.
local function batch_progress(tag, batch, done, charged, now, retention)
  local bkey = k_batch(tag, batch)
  local b = redis.call("HMGET", bkey, "admitted", "webhook", "org", "completed", "failed", "canceled")
  if not b[1] then
    return  -- the batch record expired
  end
  local counts = {completed = tonumber(b[4] or "0"), failed = tonumber(b[5] or "0"),
    canceled = tonumber(b[6] or "0")}
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
    local delivery = "batch_" .. batch
    redis.call("HSET", k_delivery(tag, delivery), "task", "", "batch", batch, "org", b[3], "url", b[2],
      "event", "msg_batch_" .. batch, "attempts", 0, "state", "pending", "created", now)
    redis.call("ZADD", k_wh_due(tag), now, delivery)
  end
end

-- The webhook delivery of a finished task: its first one, written into the task hash with the terminal
-- fields (appended to `fields`; see delivery_record). body nil: taskq.deliveries builds it from the
-- task record when it is first sent.
local function queue_webhook(d, tag, id, org, url, body, now, fields)
  local delivery = first_delivery(id)
  local _, p = delivery_record(tag, delivery)
  for _, kv in ipairs({{"task", id}, {"org", org}, {"url", url}, {"event", "msg_" .. id},
      {"body", body}, {"attempts", 0}, {"state", "pending"}, {"created", now}}) do
    if kv[2] ~= nil then
      fields[#fields + 1] = p .. kv[1]
      fields[#fields + 1] = kv[2]
    end
  end
  if d then
    d.due[#d.due + 1] = now
    d.due[#d.due + 1] = delivery
  else
    redis.call("ZADD", k_wh_due(tag), now, delivery)
  end
  fields[#fields + 1] = "wh_state"; fields[#fields + 1] = "pending"
  fields[#fields + 1] = "wh_last"; fields[#fields + 1] = delivery
end

-- The counters of a finished task: by outcome, per minute, its latency, the latest failures.
local function count_ending(d, tag, e, org, ttype, started)
  local status, now = e.status, tonumber(e.now)
  if status == "COMPLETED" then
    count(d, tag, "completed:" .. ttype)
    count_minute(d, tag, now, "completed")
  elseif status == "FAILED" then
    local err = cjson.decode(e.error)
    local code = err.code or ""
    count(d, tag, "failed:" .. ttype .. ":" .. code)
    count_minute(d, tag, now, "failed")
    redis.call("LPUSH", k_failures(tag), cjson.encode({id = e.id, org = org, type = ttype, code = code,
      message = err.message or "", at = tonumber(now)}))
    redis.call("LTRIM", k_failures(tag), 0, 99)
  else
    count(d, tag, "canceled:" .. ttype)
  end
  if started and started ~= "" and status ~= "CANCELED" then
    count_latency(d, tag, ttype, now - tonumber(started))
  end
end

-- Last step of COMPLETED/FAILED/CANCELED: write the task's terminal fields, count it, queue its
-- webhook event (outbox) when it has a url and notify is set, start the retention clock, move its
-- batch on; the lease release, webhook queueing, counts and batch progress wait for flush_queue(d)
-- when d defers. The task's retention starts when its first delivery is final (wh_record.lua), so
-- nothing expires under a delivery still waiting. `e`, the ending, has the fields:
--   id, now (ms), retention (s), status   "COMPLETED" | "FAILED" | "CANCELED"
--   charged   credits charged (0 unless COMPLETED; a number or its digits)
--   result    the result json (COMPLETED); error: the error json {code, message} (FAILED, CANCELED)
--   task      FINISH_FIELDS from held() (index 3 on), or nil to read them here
--   notify    queue the webhook event (COMPLETED and FAILED: always)
--   body      the webhook body, built by taskq.scheduler (COMPLETED, FAILED); nil for CANCELED
local function finish(d, tag, e)
  local id, now = e.id, e.now
  local tkey = k_task(tag, id)
  local t = e.task
  if not t then
    t = redis.call("HMGET", tkey, "token", "status", unpack(FINISH_FIELDS))
  end
  local org, idem, webhook, ttype, started, batch = t[3], t[4], t[5], t[6], t[7], t[8]
  if d then
    d.unleased[#d.unleased + 1] = id
  else
    redis.call("ZREM", k_proc(tag), id)
  end
  local outcome = e.result or e.error
  local charged = e.charged  -- a number, or its digits as an ack was given them (no printf per task)
  if type(charged) ~= "string" then
    charged = charged == 0 and "0" or string.format("%d", charged)
  end
  local fields = {"status", e.status, "finished", now, "charged", charged, e.result and "result" or "error",
    outcome}
  if e.status == "CANCELED" then
    fields[#fields + 1] = "token"; fields[#fields + 1] = ""
  end
  local queued = webhook and webhook ~= "" and e.notify
  if queued then
    queue_webhook(d, tag, id, org, webhook, e.body, now, fields)
  end
  redis.call("HSET", tkey, unpack(fields))
  if not queued then
    redis.call("EXPIRE", tkey, e.retention)
  end
  if idem and idem ~= "" then
    redis.call("EXPIRE", k_idem(tag, org, idem), e.retention)
  end
  if t[10] == SYNC_PRIORITY then  -- sync: wake the waiting intake with the outcome
    local inbox = redis.call("HGET", tkey, "inbox")
    if inbox then
      redis.call("RPUSH", k_inbox(tag, inbox), id .. "\n" .. e.status .. "\n" .. outcome)
      redis.call("EXPIRE", k_inbox(tag, inbox), SYNC_KEEP)
    else
      redis.call("RPUSH", k_reply(tag, id), e.status .. "\n" .. outcome)
      redis.call("EXPIRE", k_reply(tag, id), SYNC_KEEP)
    end
    redis.call("EXPIRE", tkey, SYNC_KEEP)
  end
  count_ending(d, tag, e, org, ttype, started)
  if batch and batch ~= "" then
    local field = string.lower(e.status)
    if d then
      local b = d.batches[batch]
      if not b then
        b = {done = {}, charged = 0}
        d.batches[batch] = b
      end
      b.done[field] = (b.done[field] or 0) + 1
      b.charged = b.charged + tonumber(charged)
      b.now = now
    else
      batch_progress(tag, batch, {[field] = 1}, tonumber(charged), now, e.retention)
    end
  end
end

-- Write what a queue deferral owes: counters, leases released, webhooks due, batch progress, and
-- parked orgs that are below their concurrency again.
local function flush_queue(d, tag, retention)
  flush_counts(d)
  for from = 1, #d.unleased, 1000 do
    redis.call("ZREM", k_proc(tag), unpack(d.unleased, from, math.min(from + 999, #d.unleased)))
  end
  for from = 1, #d.due, 1000 do
    redis.call("ZADD", k_wh_due(tag), unpack(d.due, from, math.min(from + 999, #d.due)))
  end
  for batch, b in pairs(d.batches) do
    batch_progress(tag, batch, b.done, b.charged, b.now, retention)
  end
  for org in pairs(d.settled) do
    if redis.call("SISMEMBER", k_capped(tag), org) == 1 then
      local o = redis.call("HMGET", k_org(tag, org), "inflight", "concurrency")
      if tonumber(o[1] or "0") < tonumber(o[2] or "0") then
        redis.call("SREM", k_capped(tag), org)
        index_org(tag, org, turn_of(tag, org))
      end
    end
  end
  d.unleased, d.due, d.batches, d.settled = {}, {}, {}, {}
end

local CANCELED_ERROR = '{"code":"TASK_CANCELED","message":"The task was canceled by request"}'

-- Make a task CANCELED: release its credits, count it, webhook only if the org opted in.
local function cancel_task(d, tag, id, now, retention)
  local t = redis.call("HMGET", k_task(tag, id), "token", "status", unpack(FINISH_FIELDS))
  local org, cost = t[3], t[9]
  redis.call("HINCRBY", k_org(tag, org), "reserved", -tonumber(cost or "0"))
  local notify = redis.call("HGET", k_org(tag, org), "notify_canceled") == "1"
  finish(d, tag, {id = id, now = now, retention = retention, status = "CANCELED", charged = 0,
    error = CANCELED_ERROR, task = t, notify = notify})
end

-- At a cancellation safe point (retry, release, expired lease): a task whose cancel was requested
-- while it ran becomes CANCELED instead of going back in line. True when it did.
local function cancel_if_requested(tag, id, now, retention)
  local t = redis.call("HMGET", k_task(tag, id), "org", "type", "cancel")
  if t[3] ~= "1" then
    return false
  end
  settle(AT_ONCE, tag, t[1], t[2])
  cancel_task(AT_ONCE, tag, id, now, retention)
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
