-- admit.lua: admit one batch of validated tasks for one organization, atomically.
--
-- KEYS[1]  rw org hash            T:org:<org>
-- KEYS[2]  w  arrival counter     T:seq
-- KEYS[3]  w  round-robin counter T:rr
-- KEYS[4]  rw turns               T:turn
-- KEYS[5]  r  parked orgs         T:capped
-- KEYS[6]  w  wake list           T:wake
-- KEYS[7]  w  waits               T:delayed
-- ARGV[1]  shard tag T         ARGV[2] org id      ARGV[3] now (ms)
-- ARGV[4]  JSON array of tasks, each [id, type, priority, cost, idempotency key or "",
--          webhook url or "", input index, 1 for a synchronous call (a batch of one, priority 11),
--          due (ms; 0 = at once), and for a synchronous call the inbox id of its intake process or ""]
-- ARGV[5]  batch id or ""      ARGV[6] items in the request (valid or not)
-- ARGV[7]  batch webhook url or ""   ARGV[8] batch record TTL (seconds)
-- ARGV[9..] the payload json of each task, in the same order (kept out of ARGV[4]: decoding
--           JSON inside JSON costs more than the whole rest of the script; one argument per task
--           field instead costs the client more to encode than the JSON costs here)
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   w  T:t:<id>               rw T:lane:<org>:<type>    w  T:ready:<type>
--   rw T:idem:<org>:<key>     w  T:org:<org>:tasks      w  T:org:<org>:types
--   rw T:b:<id>               w  T:b:<id>:ids           w  T:metrics
--   w  T:stats:<minute>
--
-- Returns {"no_org"} when the organization does not exist, {"batch_exists"} when a batch with this id
-- was admitted before (a batch id admits once), {"queue_full", limit} when the whole batch
-- would pass the queue limit (nothing admitted), else {"ok", r1, ..., rn} where ri is "ok",
-- "dup:<task id>" (idempotency key already used, also earlier in this batch) or "credits".
-- A synchronous call takes one of the org's concurrency slots, shared with its PROCESSING tasks
-- (inflight) and the other calls still waiting for a worker (q11): {"concurrency", limit, current}
-- when none is free (nothing admitted), else {"ok", verdict, limit, current, credits left} with
-- current counting this call when admitted. It skips the queue limit and the org's task listing.
--
-- Order within a lane: score = (10 - priority) * 2^40 + seq, so ZPOPMIN gives priority 10 first and
-- arrival order within a priority. An org's entry in ready:<type> is band * 2^40 + turn.
-- A delayed task (due > 0) waits in T:delayed, QUEUED and counted, as a retry does; claim.lua moves it
-- to its lane when due, at its score: its place in line is its admission, so it runs as soon as it may.

local tag, org, now = ARGV[1], ARGV[2], ARGV[3]
local batch_id, total, batch_hook, batch_ttl = ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local tasks = cjson.decode(ARGV[4])
local n = #tasks
local BAND = 1099511627776

-- The org's balance, limits and queued counts (q1..q11: o[5..15]), read once and written once; then
-- its calls in flight and its concurrency (o[16], o[17]) for a synchronous call.
local o = redis.call("HMGET", KEYS[1], "credits", "reserved", "queued", "queue_limit", "q1", "q2", "q3",
  "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11", "inflight", "concurrency")
if not o[4] then
  return {"no_org"}
end
local credits, reserved = tonumber(o[1] or "0"), tonumber(o[2] or "0")
local queued, limit = tonumber(o[3] or "0"), tonumber(o[4] or "0")
if batch_id ~= "" and redis.call("EXISTS", k_batch(tag, batch_id)) == 1 then
  return {"batch_exists"}
end
local metrics = k_metrics(tag)
-- sync: a synchronous call is refused at once when the org has no free concurrency slot
local sync = n == 1 and tasks[1][8] == 1
local slots, busy = tonumber(o[17] or "0"), tonumber(o[16] or "0") + tonumber(o[15] or "0")
if sync and busy >= slots then
  redis.call("HINCRBY", metrics, "rejected:CONCURRENCY_LIMIT_EXCEEDED", 1)
  return {"concurrency", slots, busy}
end
if not sync and queued + n > limit then
  redis.call("HINCRBY", metrics, "rejected:QUEUE_LIMIT_EXCEEDED", n)
  return {"queue_full", limit}
end

local available = credits - reserved
local first_seq = redis.call("INCRBY", KEYS[2], n) - n
local out = {"ok"}
local ids = {}  -- input index -> admitted task id
local listing = {}  -- admitted ids in arrival order, for the org's task listing
local lanes = {}  -- type -> {score, id, score, id, ...}: one ZADD per lane
local waits = {}  -- delayed tasks: {due, id, due, id, ...}
local admitted, taken = 0, 0
local prio_counts = {}

for i = 1, n do
  local t = tasks[i]
  local id, ttype, prio, cost = t[1], t[2], t[3], t[4]
  local idem, webhook, payload = t[5], t[6], ARGV[8 + i]
  local existing = false
  if idem ~= "" then
    existing = redis.call("GET", k_idem(tag, org, idem))
  end
  if existing then
    out[#out + 1] = "dup:" .. existing
  elseif cost > available then
    out[#out + 1] = "credits"
  else
    available = available - cost
    taken = taken + cost
    admitted = admitted + 1
    local seq = first_seq + i
    local score = (10 - prio) * BAND + seq
    local due = t[9] or 0
    local fields = {"org", org, "type", ttype, "status", "QUEUED", "prio", prio, "created", now,
      "payload", payload, "cost", cost, "score", score}  -- attempts: absent until the first claim
    if due > 0 then
      fields[#fields + 1] = "due"; fields[#fields + 1] = due
    end
    if idem ~= "" then
      fields[#fields + 1] = "idem"; fields[#fields + 1] = idem
      redis.call("SET", k_idem(tag, org, idem), id)
    end
    if webhook ~= "" then
      fields[#fields + 1] = "webhook"; fields[#fields + 1] = webhook
    end
    if batch_id ~= "" then
      fields[#fields + 1] = "batch"; fields[#fields + 1] = batch_id
    end
    if sync and t[10] and t[10] ~= "" then
      fields[#fields + 1] = "inbox"; fields[#fields + 1] = t[10]
    end
    redis.call("HSET", k_task(tag, id), unpack(fields))
    if due > 0 then
      -- Tasks due in the same millisecond come due in input order (the fraction stays within it).
      waits[#waits + 1] = due - (n - i) / n / 2
      waits[#waits + 1] = id
    else
      local lane = lanes[ttype]
      if not lane then
        lane = {}
        lanes[ttype] = lane
      end
      lane[#lane + 1] = score
      lane[#lane + 1] = id
    end
    prio_counts[prio] = (prio_counts[prio] or 0) + 1
    ids[t[7]] = id
    if not sync then
      listing[#listing + 1] = id
    end
    out[#out + 1] = "ok"
  end
end

local dups, broke = 0, 0
for i = 2, #out do
  if out[i] == "credits" then broke = broke + 1 elseif out[i] ~= "ok" then dups = dups + 1 end
end
if dups > 0 then redis.call("HINCRBY", metrics, "rejected:RESOURCE_ALREADY_EXISTS", dups) end
if broke > 0 then redis.call("HINCRBY", metrics, "rejected:INSUFFICIENT_CREDITS", broke) end

if admitted > 0 then
  redis.call("HINCRBY", metrics, "admitted", admitted)
  local minute = k_stats(tag, math.floor(tonumber(now) / 60000))
  if redis.call("HINCRBY", minute, "admitted", admitted) == admitted then
    redis.call("EXPIRE", minute, 7200)  -- kept two hours from its first count
  end
  local counts = {"queued", string.format("%d", queued + admitted),
    "reserved", string.format("%d", reserved + taken)}
  for prio, count in pairs(prio_counts) do
    counts[#counts + 1] = "q" .. prio
    counts[#counts + 1] = string.format("%d", tonumber(o[4 + prio] or "0") + count)
  end
  redis.call("HSET", KEYS[1], unpack(counts))
  local heads = {}  -- type -> the lane's head score when this batch started the lane (else unknown)
  for ttype, members in pairs(lanes) do
    if redis.call("SADD", k_org_types(tag, org), ttype) == 1 then  -- the lane was empty
      local head = members[1]
      for m = 3, #members, 2 do
        head = math.min(head, members[m])
      end
      heads[ttype] = head
    end
    for from = 1, #members, 1000 do  -- unpack stays well inside Lua's stack limit
      redis.call("ZADD", k_lane(tag, org, ttype), unpack(members, from, math.min(from + 999, #members)))
    end
  end
  if redis.call("SISMEMBER", KEYS[5], org) == 0 then
    local turn = redis.call("HGET", KEYS[4], org)
    if not turn then
      turn = redis.call("INCR", KEYS[3])
      redis.call("HSET", KEYS[4], org, turn)
    end
    for ttype, _ in pairs(lanes) do
      local head = heads[ttype] or tonumber(redis.call("ZRANGE", k_lane(tag, org, ttype), 0, 0, "WITHSCORES")[2])
      local band = math.floor(head / BAND)
      redis.call("ZADD", k_ready(tag, ttype), band * BAND + tonumber(turn), org)
    end
  end
  for from = 1, #listing, 1000 do
    redis.call("RPUSH", k_org_tasks(tag, org), unpack(listing, from, math.min(from + 999, #listing)))
  end
  for from = 1, #waits, 1000 do
    redis.call("ZADD", KEYS[7], unpack(waits, from, math.min(from + 999, #waits)))
  end
  if next(lanes) ~= nil and redis.call("LPUSH", KEYS[6], now) > 64 then
    redis.call("LTRIM", KEYS[6], 0, 63)
  end
end

if batch_id ~= "" then
  local order = {}
  for i = 0, total - 1 do
    order[#order + 1] = ids[i] or ""
  end
  local list = k_batch_ids(tag, batch_id)
  for from = 1, #order, 1000 do
    redis.call("RPUSH", list, unpack(order, from, math.min(from + 999, #order)))
  end
  redis.call("HSET", k_batch(tag, batch_id), "org", org, "created", now, "total", total,
    "admitted", admitted, "webhook", batch_hook)
  if admitted == 0 then
    redis.call("HSET", k_batch(tag, batch_id), "finished", now)
  end
  redis.call("EXPIRE", k_batch(tag, batch_id), batch_ttl)
  redis.call("EXPIRE", list, batch_ttl)
end
if sync then
  out[#out + 1] = slots
  out[#out + 1] = busy + admitted
  out[#out + 1] = available
end
return out
