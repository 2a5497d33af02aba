"""Creates that may still land in Genesys after we gave up on them, watched by request token
until they no longer can."""

from __future__ import annotations

import json
from typing import cast

from middleware.store import keys
from middleware.store.client import StoreBase


class OrphanStore(StoreBase):
    """The orphan watch: request token, the number it was for, and until when to look."""

    def watch_orphan(self, shard: str, token: str, e164: str, since_ms: int,
                     until_ms: int) -> None:
        """Look for callbacks carrying ``token`` (of a number of ``shard``) until
        ``until_ms`` (a later watch of the same token only extends it)."""
        pipe = self._r.pipeline(transaction=True)
        # GT still adds a token not watched yet.
        pipe.zadd(keys.orphan_watch(shard), {token: until_ms}, gt=True)
        pipe.hsetnx(keys.orphan_info(shard), token, json.dumps({"e": e164, "s": since_ms}))
        self._call(pipe.execute)

    def watched_orphans(self, shard: str, now_ms: int, limit: int, offset: int = 0
                        ) -> list[tuple[str, str, int]]:
        """Up to ``limit`` of the shard's watched tokens (token, number, first attempt ms),
        those closest to the end of their watch first, skipping the first ``offset``;
        expired watches are dropped on the way."""
        watch, info = keys.orphan_watch(shard), keys.orphan_info(shard)
        expired = cast(list[str], self._call(lambda: self._r.zrangebyscore(
            watch, "-inf", now_ms - 1)))
        if expired:
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(watch, *expired)
            pipe.hdel(info, *expired)
            self._call(pipe.execute)
        tokens = cast(list[str], self._call(lambda: self._r.zrangebyscore(
            watch, now_ms, "+inf", start=offset, num=limit)))
        if not tokens:
            return []
        infos = cast(list[str | None], self._call(lambda: self._r.hmget(info, tokens)))
        found: list[tuple[str, str, int]] = []
        for token, known in zip(tokens, infos, strict=True):
            if known:
                raw = json.loads(known)
                found.append((token, str(raw["e"]), int(raw["s"])))
        return found

    def cancels_to_finish(self, shard: str, limit: int) -> list[str]:
        """The shard's callbacks a revocation left for the worker to disconnect."""
        return [str(m) for m in cast(list[str], self._call(
            lambda: self._r.srandmember(keys.revoking(shard), limit)))]

    def cancel_finished(self, shard: str, callback_id: str) -> None:
        """The revocation's disconnect of this callback is done (or no longer needed)."""
        self._call(lambda: self._r.srem(keys.revoking(shard), callback_id))

    def in_outbox(self, shard: str, token: str) -> bool:
        """Whether the shard's outbox still has this create to deliver (not delivered,
        dropped or dead-lettered yet)."""
        return self._call(lambda: self._r.zscore(keys.outbox(shard), token)) is not None
