"""Idempotency keys (Stripe semantics) in Redis."""

from __future__ import annotations

from typing import ClassVar, Final

from middleware.store import keys
from middleware.store.client import StoreBase

# Idempotency keys (Stripe semantics). KEYS[1] the key's record.
# ARGV: fingerprint, owner token, in-flight lease ms.
_BEGIN_IDEMPOTENT: Final = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'fp', 'o', 'b')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'st', 'inflight', 'fp', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'NEW'}
end
if cur[2] ~= ARGV[1] then return {'MISMATCH'} end
if cur[1] == 'done' then return {'REPLAY', cur[4]} end
if cur[3] == ARGV[2] then return {'NEW'} end
return {'INFLIGHT', tostring(redis.call('PTTL', KEYS[1]))}
"""


# ARGV: owner token, answer JSON ('' = forget the key), ttl s.
_FINISH_IDEMPOTENT: Final = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'st', 'done', 'b', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""



# Take over a finished key whose stored answer is ``ARGV[1]`` (compared, so two requests
# racing to take it over cannot both win). ARGV: answer, owner token, lease ms. A key this
# owner holds already means Redis applied an earlier try whose reply was lost: ours.
_TAKE_OVER_IDEMPOTENT: Final = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'b', 'o')
if cur[1] == 'inflight' and cur[3] == ARGV[2] then return 1 end
if cur[1] ~= 'done' or cur[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'inflight', 'o', ARGV[2])
redis.call('HDEL', KEYS[1], 'b')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class IdempotencyStore(StoreBase):
    """Idempotency keys: begin, finish, release."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_take_over_idempotent": _TAKE_OVER_IDEMPOTENT,
        "_begin_idempotent": _BEGIN_IDEMPOTENT,
        "_finish_idempotent": _FINISH_IDEMPOTENT,
    }

    def begin_idempotent(self, scope: str, fingerprint: str, owner: str, lease_ms: int
                         ) -> tuple[str, str]:
        """``(NEW|REPLAY|MISMATCH|INFLIGHT, stored answer or ms left in flight)``."""
        reply = self._call(lambda: self._script('_begin_idempotent')(
            keys=[keys.idempotency(scope)], args=[fingerprint, owner, lease_ms]))
        return str(reply[0]), str(reply[1]) if len(reply) > 1 else ""

    def finish_idempotent(self, scope: str, owner: str, answer: str, ttl_s: int) -> None:
        """Store the answer for replays (``answer`` empty: forget the key altogether)."""
        self._call(lambda: self._script('_finish_idempotent')(
            keys=[keys.idempotency(scope)], args=[owner, answer, ttl_s]))


    def take_over_idempotent(self, scope: str, answer: str, owner: str, lease_ms: int) -> bool:
        """Put a finished key back in flight for ``owner`` if it still holds ``answer``."""
        return bool(self._call(lambda: self._script("_take_over_idempotent")(
            keys=[keys.idempotency(scope)], args=[answer, owner, lease_ms])))
