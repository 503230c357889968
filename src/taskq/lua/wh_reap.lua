-- wh_reap.lua: return webhook deliveries whose lease expired (the sender died) to the due set.
--
-- KEYS[1]  w  waiting deliveries  T:wh:due
-- KEYS[2]  rw leased deliveries   T:wh:proc
-- ARGV[1]  shard tag T   ARGV[2] now (ms)   ARGV[3] limit
--
-- Derived keys (built with the k_* helpers of taskq.keys, here or in an included library;
-- r read, w written):
--   rw T:t:<id>               rw T:wh:<id>
--
-- The lost attempt keeps its number (its POST may have arrived) and gets a log line saying its result
-- was lost; the delivery is due again at once, so the receiver may see the same webhook-id twice.
-- Returns the number of deliveries returned.

local tag, now = ARGV[1], tonumber(ARGV[2])
local ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call("ZREM", KEYS[2], id)
  local key, p = delivery_record(tag, id)
  local d = redis.call("HMGET", key, p .. "state", p .. "attempts", p .. "log")
  if d[1] == "sending" then
    local line = cjson.encode({at = now, attempt = tonumber(d[2]), status = cjson.null,
      durationMs = cjson.null, outcome = "lost",
      error = "the sender stopped before recording this attempt; sending again"})
    redis.call("HSET", key, p .. "state", "pending", p .. "next", now,
      p .. "log", d[3] and (d[3] .. "\n" .. line) or line)
    redis.call("ZADD", KEYS[1], now, id)
  end
end
return #ids
