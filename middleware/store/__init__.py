"""Everything the service keeps in Redis, split by concern; the only package that imports redis.

Callers speak in domain words (``claim_window``, ``save_consent``); no other package
knows a key name (``keys``), a TTL or a script. Each part (``window``, ``ledger``,
``outbox``, ``consent``, ``idempotency``, ``genesys``) keeps its Lua scripts beside the
methods that run them; ``Store`` is all of them over one client.
"""

from __future__ import annotations

from middleware.store.client import RedisClient, RedisError, StoreBase, client_key, connect
from middleware.store.consent import ConsentStore
from middleware.store.genesys import GenesysStore
from middleware.store.idempotency import IdempotencyStore
from middleware.store.keys import PREFIX, SHARDS
from middleware.store.ledger import LedgerStore
from middleware.store.orphans import OrphanStore
from middleware.store.outbox import OutboxEntry, OutboxStore
from middleware.store.window import _CLAIM_WINDOW, WindowClaim, WindowStore

__all__ = ["PREFIX", "SHARDS", "_CLAIM_WINDOW", "OutboxEntry", "RedisClient", "RedisError", "Store",
           "WindowClaim", "client_key", "connect"]


class Store(WindowStore, LedgerStore, OutboxStore, ConsentStore, IdempotencyStore,
            GenesysStore, OrphanStore, StoreBase):
    """The service's state in Redis, behind methods named for what they mean."""
