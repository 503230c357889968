-- wh_claim.lua: lease up to ARGV[4] due webhook deliveries of one shard for sending.
--
-- KEYS[1]  waiting deliveries  T:wh:due    (score = next attempt, ms)
-- KEYS[2]  leased deliveries   T:wh:proc   (score = lease deadline, ms)
-- ARGV[1]  shard tag T   ARGV[2] now (ms)   ARGV[3] lease deadline (ms)   ARGV[4] limit
--
-- Each claimed delivery moves from wh:due to wh:proc, counts one more attempt (on the delivery, and
-- in its task's wh_attempts while the task exists) and turns "sending".
-- An id whose record expired, or that is already final, is dropped from wh:due.
-- Returns {next, d1, ..., dn}: next is the score of the earliest delivery still waiting ("" when
-- none); each di is {id, url, event id, body, org, attempt number, task id, org's wh_secrets json}.

local tag, now, deadline = ARGV[1], ARGV[2], ARGV[3]
local out = {""}
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  redis.call("ZREM", KEYS[1], id)
  local key = k_delivery(tag, id)
  local d = redis.call("HMGET", key, "state", "url", "event", "body", "org", "task")
  if d[1] == "pending" then
    local attempt = redis.call("HINCRBY", key, "attempts", 1)
    local tkey = k_task(tag, d[6] or "")
    if redis.call("EXISTS", tkey) == 1 then  -- an expired task is not brought back
      redis.call("HINCRBY", tkey, "wh_attempts", 1)
    end
    redis.call("HSET", key, "state", "sending")
    redis.call("ZADD", KEYS[2], deadline, id)
    local secrets = redis.call("HGET", k_org(tag, d[5]), "wh_secrets") or "[]"
    out[#out + 1] = {id, d[2], d[3], d[4], d[5], attempt, d[6] or "", secrets}
  end
end
local head = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if head[2] then
  out[1] = head[2]
end
return out
