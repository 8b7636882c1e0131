"""The limits store in Redis: shared by every process on every machine, timed by the Redis server's clock.

Each operation is one Lua script, so it is atomic in Redis.
"""

from __future__ import annotations

from instances.outbound.limits.store import MICRO, Attempt, KeyPrefixed, Reservation, waiter_lease_seconds

# Numbers go into Redis as "%d" strings: Lua 5.1 would print microsecond
# timestamps with 14 significant digits and lose precision.
# KEYS: sent (entry -> when it went, then when it finished), pause, counter,
# planned (entry -> the moment it was given, not gone yet).
_RESERVE = """
local window, amount, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = string.format('%d', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', old)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', old)
local at = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > at then at = paused end
-- The amount-th latest of sent and planned requests together (planned ones
-- come after the sent ones).
local planned = redis.call('ZCARD', KEYS[4])
local nth
if planned >= amount then
  nth = redis.call('ZRANGE', KEYS[4], -amount, -amount, 'WITHSCORES')
elseif redis.call('ZCARD', KEYS[1]) >= amount - planned then
  nth = redis.call('ZRANGE', KEYS[1], planned - amount, planned - amount, 'WITHSCORES')
end
if nth and nth[2] and tonumber(nth[2]) + window > at then at = tonumber(nth[2]) + window end
if at - now > max_wait then return {0, at, now, ''} end
local entry = tostring(redis.call('INCR', KEYS[3]))
if at == now then
  redis.call('ZADD', KEYS[1], string.format('%d', at), entry)
else
  redis.call('ZADD', KEYS[4], string.format('%d', at), entry)
end
local ttl = math.floor((at - now + window) / 1000) + 60000
for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4]}) do redis.call('PEXPIRE', key, ttl) end
return {1, at, now, entry}
"""

# Just before the request goes: check it against what has really been sent
# (finished requests carry their completion time by now) and mark it sent
# now, or plan it later when the window is not free yet.
_CONFIRM = """
local entry, window, amount, max_wait = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREM', KEYS[1], entry)
redis.call('ZREM', KEYS[4], entry)
local at = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > at then at = paused end
local nth = redis.call('ZRANGE', KEYS[1], -amount, -amount, 'WITHSCORES')
if nth[2] and tonumber(nth[2]) + window > at then at = tonumber(nth[2]) + window end
if at - now > max_wait then return {0, at, now} end
local ttl = math.floor((at - now + window) / 1000) + 60000
if at == now then
  redis.call('ZADD', KEYS[1], string.format('%d', at), entry)
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('ZADD', KEYS[4], string.format('%d', at), entry)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return {1, at, now}
"""

# The response is in: the request reached the API at the latest when it went
# plus the time it took (measured by the sender: a duration, so no clocks are
# compared; nor is this round trip's latency counted against the limit).
_COMPLETE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local at
if score then
  at = tonumber(score) + tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  at = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
redis.call('ZADD', KEYS[1], 'GT', string.format('%d', at), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) / 1000) + 60000)
return 1
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], string.format('%d', until_), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
return until_
"""

# KEYS: holders (owner -> lease expiry), queue (owner -> ticket), waiters (owner
# -> waiter expiry), ticket counter. ARGV[1] is the wake key prefix.
_POOL_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function cleanup()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
  for _, owner in ipairs(gone) do
    redis.call('ZREM', KEYS[2], owner)
    redis.call('ZREM', KEYS[3], owner)
  end
end
local function wake(limit, except)
  local free = limit - redis.call('ZCARD', KEYS[1])
  if free <= 0 then return end
  for _, owner in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    if owner ~= except then
      local key = ARGV[1] .. owner
      if redis.call('EXISTS', key) == 0 then
        redis.call('RPUSH', key, 1)
        redis.call('PEXPIRE', key, 60000)
      end
    end
  end
end
"""

_POOL_ACQUIRE = _POOL_COMMON + """
local owner, limit = ARGV[2], tonumber(ARGV[3])
local lease, waiter_lease = tonumber(ARGV[4]), tonumber(ARGV[5])
cleanup()
if not redis.call('ZSCORE', KEYS[2], owner) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), owner)
end
redis.call('ZADD', KEYS[3], string.format('%d', now + waiter_lease), owner)
local free = limit - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], owner)
if ahead < free then
  redis.call('ZREM', KEYS[2], owner)
  redis.call('ZREM', KEYS[3], owner)
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), owner)
  wake(limit, owner)
  return {1, 0, -1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_expiry = -1
if first[2] then next_expiry = tonumber(first[2]) - now end
if free > 0 then
  -- A slot is free but places ahead hold it: one of them may be a killed
  -- waiter, gone when its place's lease runs out (only the first 100 looked at).
  local before = redis.call('ZRANGE', KEYS[2], 0, math.min(ahead, 100) - 1)
  if #before > 0 then
    for _, expiry in ipairs(redis.call('ZMSCORE', KEYS[3], unpack(before))) do
      if expiry then
        local left = tonumber(expiry) - now
        if next_expiry < 0 or left < next_expiry then next_expiry = left end
      end
    end
  end
end
return {0, ahead, next_expiry}
"""

_POOL_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
  return 1
end
return 0
"""

_POOL_RELEASE = _POOL_COMMON + """
local owner, limit = ARGV[2], tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], owner)
redis.call('ZREM', KEYS[2], owner)
redis.call('ZREM', KEYS[3], owner)
redis.call('DEL', ARGV[1] .. owner)
cleanup()
wake(limit, owner)
return 1
"""

_POOL_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = string.format('%d', now)
return {redis.call('ZRANGEBYSCORE', KEYS[1], floor, '+inf'), redis.call('ZRANGEBYSCORE', KEYS[3], floor, '+inf')}
"""


class RedisStore(KeyPrefixed):
    """Limits kept in Redis: shared by every process on every machine, timed by the Redis server's clock."""

    name = "redis"

    def __init__(self, url: str, prefix: str | None = None):
        import redis

        self.redis = redis.Redis.from_url(url, health_check_interval=30)
        self._prefix = prefix
        self._reserve = self.redis.register_script(_RESERVE)
        self._confirm = self.redis.register_script(_CONFIRM)
        self._complete = self.redis.register_script(_COMPLETE)
        self._pause = self.redis.register_script(_PAUSE)
        self._acquire = self.redis.register_script(_POOL_ACQUIRE)
        self._renew = self.redis.register_script(_POOL_RENEW)
        self._release = self.redis.register_script(_POOL_RELEASE)
        self._usage = self.redis.register_script(_POOL_USAGE)

    def _rate_keys(self, bucket: str) -> list[str]:
        base = f"{self.prefix}:rate:{{{bucket}}}"  # one hash slot per bucket
        return [f"{base}:sent", f"{base}:pause", f"{base}:seq", f"{base}:planned"]

    def _pool_keys(self, pool: str) -> list[str]:
        base = f"{self.prefix}:pool:{{{pool}}}"
        return [f"{base}:holders", f"{base}:queue", f"{base}:waiters", f"{base}:tickets"]

    def _wake_prefix(self, pool: str) -> str:
        return f"{self.prefix}:pool:{{{pool}}}:wake:"

    def reserve(self, bucket: str, window: float, amount: int, max_wait: float) -> Reservation:
        ok, at, now, entry = self._reserve(self._rate_keys(bucket), [int(window * MICRO), amount, int(max_wait * MICRO)])
        return Reservation(bool(ok), int(at), int(now), entry.decode() if isinstance(entry, bytes) else str(entry))

    def confirm(self, bucket: str, entry: str, window: float, amount: int, max_wait: float) -> Reservation:
        ok, at, now = self._confirm(
            self._rate_keys(bucket), [entry, int(window * MICRO), amount, int(max_wait * MICRO)]
        )
        return Reservation(bool(ok), int(at), int(now), entry)

    def complete(self, bucket: str, entry: str, window: float, took: float) -> None:
        self._complete(self._rate_keys(bucket)[:1], [entry, int(window * MICRO), int(took * MICRO)])

    def pause(self, bucket: str, seconds: float) -> None:
        self._pause([self._rate_keys(bucket)[1]], [int(seconds * MICRO)])

    def paused_buckets(self, buckets: list[str]) -> dict[str, int]:
        """{bucket: end of its pause} of the paused ones (microseconds since the epoch, Redis's clock): one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.get(self._rate_keys(bucket)[1])
            *values, (seconds, micros) = pipe.time().execute()
        now = seconds * MICRO + micros
        return {bucket: int(value) for bucket, value in zip(buckets, values) if value and int(value) > now}

    def clear_pause(self, bucket: str) -> bool:
        return bool(self.redis.delete(self._rate_keys(bucket)[1]))

    def pool_acquire(self, pool: str, owner: str, limit: int, lease: float, waiter_lease: float | None = None) -> Attempt:
        """Take a slot for `lease` seconds, or join (or keep, renewed for `waiter_lease` seconds) a place in the queue."""
        waiter_lease = waiter_lease_seconds(lease) if waiter_lease is None else waiter_lease
        acquired, ahead, next_expiry = self._acquire(
            self._pool_keys(pool),
            [self._wake_prefix(pool), owner, limit, int(lease * MICRO), int(waiter_lease * MICRO)],
        )
        return Attempt(bool(acquired), int(ahead), None if next_expiry < 0 else next_expiry / MICRO)

    def pool_wait(self, pool: str, owner: str, timeout: float) -> None:
        # BLPOP takes whole or fractional seconds; 0 would mean "for ever".
        self.redis.blpop([self._wake_prefix(pool) + owner], timeout=max(timeout, 0.001))

    def pool_renew(self, pool: str, owner: str, lease: float) -> bool:
        return bool(self._renew([self._pool_keys(pool)[0]], [owner, int(lease * MICRO)]))

    def pool_release(self, pool: str, owner: str, limit: int) -> None:
        self._release(self._pool_keys(pool), [self._wake_prefix(pool), owner, limit])

    def pool_usage(self, pool: str) -> tuple[list[str], list[str]]:
        holders, waiters = self._usage(self._pool_keys(pool), [])
        return [h.decode() for h in holders], [w.decode() for w in waiters]

    def close(self) -> None:
        self.redis.close()

