"""The token bucket of the queries-per-second quota (pure), and the same arithmetic as a
Redis Lua script, so that every gateway draws on one bucket per tenant atomically.

A bucket holds at most ``burst`` tokens and gains ``rate_per_s`` per second; a query
takes one. A query that finds less than one token is refused with the time until one
is there (its ``Retry-After``), and takes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at_ms: float  # when ``tokens`` was counted


def take(
    bucket: Bucket | None, now_ms: float, rate_per_s: float, burst: float
) -> tuple[Bucket, float]:
    """The bucket after one query asks for a token at ``now_ms``, and how long that
    query must wait for one (0: it is admitted). A missing bucket is full."""
    if bucket is None:
        tokens = burst
    else:
        elapsed_ms = max(0.0, now_ms - bucket.at_ms)
        tokens = min(burst, bucket.tokens + elapsed_ms * rate_per_s / 1000)
    if tokens >= 1:
        return Bucket(tokens - 1, now_ms), 0.0
    return Bucket(tokens, now_ms), (1 - tokens) * 1000 / rate_per_s


def idle_ms(rate_per_s: float, burst: float) -> int:
    """After this long without queries a bucket is full again, so it may be forgotten."""
    return int(burst * 1000 / rate_per_s) + 1000


# :func:`take` on a Redis hash {tokens, at_ms}, with Redis's clock (the same for every
# gateway). KEYS[1]: the bucket; ARGV: rate per second, burst. Returns the wait in ms
# as a string (Redis would truncate a Lua number to an integer).
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at_ms')
local tokens = burst
if saved[1] then
  local elapsed = math.max(0, now - tonumber(saved[2]))
  tokens = math.min(burst, tonumber(saved[1]) + elapsed * rate / 1000)
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) * 1000 / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_ms', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.floor(burst * 1000 / rate) + 1000)
return tostring(wait)
"""
