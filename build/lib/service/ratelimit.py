"""A token bucket per API key, shared by every API replica through Redis.

    modx:rate:<sha256>   hash   {tokens, ts}: the bucket (expires once full again)

A bucket holds up to `rate * burst_s` tokens (at least 1) and refills at `rate` tokens per
second on Redis's clock (TIME), so replicas with skewed clocks share one limit. Each request
takes a token; with none left it is refused with the seconds until the next one.
"""

from __future__ import annotations

import logging
import math

import redis

log = logging.getLogger("modx.ratelimit")

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_ms = tonumber(ARGV[1]) / 1000
local capacity = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or capacity
local ts = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
local wait_ms = 0
if tokens >= 1 then tokens = tokens - 1 else wait_ms = math.ceil((1 - tokens) / per_ms) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return wait_ms
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str = "modx:"):
        self.prefix = prefix + "rate:"
        self._take = client.register_script(_TAKE)

    def take(self, key_hash: str, rate: float, burst_s: float) -> float:
        """0 when the request may go on, else the seconds to wait. Redis down: 0 (fail open,
        logged), since refusing every request would be worse than an unlimited minute."""
        capacity = max(1.0, rate * burst_s)
        try:
            wait_ms = self._take(keys=[self.prefix + key_hash], args=[rate, capacity])
        except redis.RedisError as e:
            log.warning("rate limit not applied, Redis unavailable: %s", e)
            return 0.0
        return wait_ms / 1000.0


def retry_after(wait_s: float) -> str:
    """The Retry-After header: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
