"""Everything the service keeps in Redis, split by concern; the only package that imports redis.

Callers speak in domain words (``claim_window``, ``save_consent``); no other package
knows a key name (``keys``), a TTL or a script. Each part (``window``, ``ledger``,
``outbox``, ``consent``, ``idempotency``, ``genesys``) keeps its Lua scripts beside the
methods that run them; ``Store`` is all of them over one client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from middleware.store import keys
from middleware.store.client import RedisClient, RedisError, StoreBase, client_key, connect
from middleware.store.consent import _STORE_CONSENT_STATE, ConsentStore, ConsentWrite, NumberFacts
from middleware.store.genesys import _TAKE_RATE_SLOT, GenesysStore
from middleware.store.idempotency import IdempotencyStore
from middleware.store.keys import PREFIX, SHARDS
from middleware.store.ledger import (
    _JOURNAL,
    READ_IN_STEP,
    LedgerRecord,
    LedgerStore,
    window_check,
)
from middleware.store.orphans import OrphanStore
from middleware.store.outbox import OutboxEntry, OutboxStore
from middleware.store.window import _CLAIM_WINDOW, WindowClaim, WindowStore

__all__ = [
    "PREFIX",
    "READ_IN_STEP",
    "SHARDS",
    "_CLAIM_WINDOW",
    "ConsentWrite",
    "NumberFacts",
    "OutboxEntry",
    "RedisClient",
    "RedisError",
    "Store",
    "WindowClaim",
    "client_key",
    "connect",
    "window_check",
]


class Store(WindowStore, LedgerStore, OutboxStore, ConsentStore, IdempotencyStore,
            GenesysStore, OrphanStore, StoreBase):
    """The service's state in Redis, behind methods named for what they mean."""

    def journal_create(self, consent: ConsentWrite | None, digest: str, token: str,
                       record: LedgerRecord, ttl_s: int, history_ttl_s: int,
                       payload: dict[str, Any], first_attempt_ms: int, epoch: int,
                       claimed: bool | str = True,
                       rate: tuple[str, int, float] | None = None) -> tuple[str, int | None]:
        """Journal a create in one step, with the consent it gave (the number's, so the same
        shard) and, on one primary, one call taken from the shared Genesys budget ``rate``
        (client, capacity, refill per ms): one round trip for all three. The consent is
        stored, and the call taken, only when the journal answers ``OK``: a refused create
        keeps no consent and spends no call. Returns the journal's answer as
        ``queue_callback`` gives it, and the budget's answer (0: a call taken; else ms to
        wait; ``None``: not asked, as on a cluster, where the budget is in another slot;
        -1: not taken)."""
        names, args = self._journal_step(digest, token, record, ttl_s, None, history_ttl_s,
                                         payload, first_attempt_ms, True, epoch, claimed)
        # One script runs them all (``_steps``): one command in one round trip, where a
        # MULTI of three scripts sent every script's text each time. The steps after the
        # journal act only if it took: each checks the journal record holds this token.
        steps: list[tuple[str, list[str], Sequence[str | int | float]]] = [
            (_JOURNAL, names, args)]
        if consent is not None:
            steps.append((_STORE_CONSENT_STATE, *self._consent_step(
                consent.digests, consent.record, consent.captured_ms, consent.lifts,
                consent.retention_s, consent.event, journaled=(names[0], token))))
        taking = rate is not None and self.mode == "standalone"
        if rate is not None and taking:
            steps.append((_TAKE_RATE_SLOT, [keys.rate(rate[0]), names[0]],
                          [rate[1], rate[2], token]))
        shape = "journal-create:" + ("consent," if consent is not None else "") + (
            "rate" if taking else "")
        replies = self._steps(shape, steps)
        return str(replies[0]), int(replies[-1]) if taking else None
