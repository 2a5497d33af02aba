"""The Genesys side of the store: the shared OAuth token, its fetch lock and the call budget."""

from __future__ import annotations

import json
from typing import ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase
from middleware.store.packed import with_layer

# A token bucket shared by every worker and instance. KEYS[1] the bucket.
# ARGV: capacity, refill per ms. Returns 0 when a token was taken, else ms to wait.
# Redis' own clock keeps every instance on one timeline. With KEYS[2] (a journal record,
# queued before in one transaction on one primary) and ARGV[3] (its request token), a call
# is taken only if that journal took: -1, nothing taken, otherwise.
_TAKE_RATE_SLOT: Final = with_layer("""
if #KEYS > 1 and R_get(KEYS[2], 't') ~= ARGV[3] then return -1 end
-- Once per journal: a step resent after its reply was lost finds the call already taken.
if #KEYS > 1 and R_setnx(KEYS[2], 'rt', 1) == 0 then return 0 end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or ms
tokens = math.min(capacity, tokens + math.max(0, ms - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return wait
""")



class GenesysStore(StoreBase):
    """The Genesys token and call budget shared by every worker and instance."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_take_rate_slot": _TAKE_RATE_SLOT,
    }

    def cached_token(self, client: str) -> tuple[str, float] | None:
        """The shared access token and its refresh-by epoch second, if one is cached."""
        raw = self._call(lambda: self._r.get(keys.token(client)))
        if not raw:
            return None
        data = json.loads(cast(str, raw))
        return str(data["token"]), float(data["refreshAt"])

    def save_token(self, client: str, token: str, refresh_at: float, ttl_s: int) -> None:
        """Share a fresh token with every worker until it should be refreshed."""
        value = json.dumps({"token": token, "refreshAt": refresh_at})
        self._call(lambda: self._r.set(keys.token(client), value, ex=max(ttl_s, 1)))

    def forget_token(self, client: str, token: str) -> None:
        """Drop the shared token if it is the one Genesys just refused."""
        key = keys.token(client)
        cached = self.cached_token(client)
        if cached and cached[0] == token:
            self._call(lambda: self._r.delete(key))

    def acquire_token_lock(self, client: str, holder: str, ttl_ms: int) -> bool:
        """Become the one worker fetching a token; the lock expires if that worker dies."""
        key = keys.token_lock(client)
        return bool(self._call(lambda: self._r.set(key, holder, nx=True, px=ttl_ms)))

    def release_token_lock(self, client: str, holder: str) -> None:
        """Release the fetch lock if we still hold it."""
        key = keys.token_lock(client)
        self._release(key, holder)

    def take_rate_token(self, client: str, capacity: int, per_ms: float) -> int:
        """Take one token from the shared Genesys call budget; 0, or ms until one is free."""
        return int(self._call(lambda: self._script('_take_rate_slot')(
            keys=[keys.rate(client)], args=[capacity, per_ms])))

