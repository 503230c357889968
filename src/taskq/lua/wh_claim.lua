-- wh_claim.lua: lease up to ARGV[4] due webhook deliveries of one shard for sending.
--
-- KEYS[1]  rw waiting deliveries  T:wh:due    (score = next attempt, ms)
-- KEYS[2]  w  leased deliveries   T:wh:proc   (score = lease deadline, ms)
-- ARGV[1]  shard tag T   ARGV[2] now (ms)   ARGV[3] lease deadline (ms)   ARGV[4] limit
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   r  T:org:<org>            rw T:t:<id>               r  T:b:<id>
--   rw T:wh:<id>
--
-- Each claimed delivery moves from wh:due to wh:proc, counts one more attempt and turns "sending"
-- (its task's wh_attempts follows when the attempt is recorded). An id whose record expired, or that
-- is already final, is dropped from wh:due. Moves and org secrets are written / read once per call.
-- Returns {next, d1, ..., dn}: next is the score of the earliest delivery still waiting ("" when
-- none); each di is {id, url, event id, body, org, attempt number, task id, org's wh_secrets json},
-- and for a delivery stored without a body (a canceled task's, batch.completed) three more: "task" or
-- "batch", its id, and that record (HGETALL; empty once expired), for taskq.deliveries to build the
-- body from.

local tag, now, deadline = ARGV[1], ARGV[2], ARGV[3]
local out = {""}
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, tonumber(ARGV[4]))
local leased, secrets = {}, {}
for _, id in ipairs(ids) do
  local key, p = delivery_record(tag, id)
  local d = redis.call("HMGET", key, p .. "state", p .. "url", p .. "event", p .. "body", p .. "org",
    p .. "task", p .. "attempts", p .. "batch")
  if d[1] == "pending" then
    local attempt = tonumber(d[7] or "0") + 1
    redis.call("HSET", key, p .. "state", "sending", p .. "attempts", attempt)
    leased[#leased + 1] = deadline
    leased[#leased + 1] = id
    local org = d[5]
    if secrets[org] == nil then
      secrets[org] = redis.call("HGET", k_org(tag, org), "wh_secrets") or "[]"
    end
    local entry = {id, d[2], d[3], d[4] or "", org, attempt, d[6] or "", secrets[org]}
    if not d[4] then  -- no body stored yet: the record taskq.deliveries builds it from
      if d[8] and d[8] ~= "" then
        entry[9], entry[10], entry[11] = "batch", d[8], redis.call("HGETALL", k_batch(tag, d[8]))
      else
        entry[9], entry[10], entry[11] = "task", d[6] or "", redis.call("HGETALL", k_task(tag, d[6] or ""))
      end
    end
    out[#out + 1] = entry
  end
end
if #ids > 0 then
  redis.call("ZREM", KEYS[1], unpack(ids))
end
if #leased > 0 then
  redis.call("ZADD", KEYS[2], unpack(leased))
end
local head = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if head[2] then
  out[1] = head[2]
end
return out
