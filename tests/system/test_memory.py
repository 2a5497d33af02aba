"""Redis stays small and bounded (README "Capacity"): after a realistic workload, every key
that grows with traffic has a TTL or is trimmed by a bounded duty, and a callback costs
what the README's capacity table says."""

from __future__ import annotations

import re
from datetime import timedelta

import redis

from middleware.clock import FixedClock
from middleware.store import keys
from tests.conftest import RedisServer, Service, Simulator
from tests.memory import Rig, build_rig, expire_after, measure, run_workload

#: Keys allowed to live without a TTL, each with what bounds it.
BOUNDED_WITHOUT_TTL: dict[str, str] = {
    # The worker's walk of pending callbacks: the trim duty drops entries scheduled before
    # the window and a week ago and entries whose records are gone, a page per round.
    r"cbm:\{s[0-9a-f]\}:pending": "pending callbacks (trimmed by the trim duty)",
    # The packed ledger (``middleware.store.packed``): records and windows carry their own
    # expiry, and the sweep duty deletes those past it, a slice of each shard per round;
    # an owner's count leaves with its last pending callback.
    r"cbm:\{s[0-9a-f]\}:cbs": "callback records (swept once expired)",
    r"cbm:\{s[0-9a-f]\}:np": "numbers' windows (swept once expired)",
    r"cbm:\{s[0-9a-f]\}:owners": "pending callbacks per owner (one counter per owner)",
    # Outbox schedule and entries: each leaves when delivered, abandoned or dead-lettered.
    r"cbm:\{s[0-9a-f]\}:outbox": "creates waiting for Genesys",
    r"cbm:\{s[0-9a-f]\}:outbox:.+": "creates waiting for Genesys, and dead letters",
    # Dead letters are never dropped (SPEC §4 Worker): one per create Genesys refused, gone
    # when replayed; counted in metrics.
    r"cbm:\{s[0-9a-f]\}:dead": "dead letters until replayed",
    # Callbacks awaiting a disconnect: removed when done; the trim duty drops those whose
    # records are gone.
    r"cbm:\{s[0-9a-f]\}:replacing": "owner moves awaiting a disconnect (trimmed)",
    r"cbm:\{s[0-9a-f]\}:revoking": "revocations awaiting a disconnect (trimmed)",
    # Watched creates: a watch ends LATE_CREATE_WATCH (15 min) after its last attempt and
    # watched_orphans drops it then.
    r"cbm:\{s[0-9a-f]\}:orphan-watch": "creates that may still land, for 15 minutes",
    r"cbm:\{s[0-9a-f]\}:orphan-watch-info": "the same tokens' numbers",
    # One counter and one cursor hash per shard: constant size.
    r"cbm:\{s[0-9a-f]\}:consent-seq": "one integer",
    r"cbm:\{s[0-9a-f]\}:cursors": "one cursor per walk",
    r"cbm:reconcile-pass": "the interval reconciliation's progress, one value",
    # Reconciliation's queue list: queues not seen on a pending callback for a while are
    # dropped each time it is read.
    r"cbm:reconcile-queues": "the queues pending callbacks are on",
    # Changes in doubt: each leaves when reconciliation has read its callback back.
    r"cbm:\{s[0-9a-f]\}:in-doubt": "callbacks whose cancel or reschedule is in doubt",
}


def unbounded(client: redis.Redis) -> list[str]:
    """Keys with no TTL that the allow-list does not name."""
    return sorted(key for key in client.scan_iter(count=1000)
                  if int(client.ttl(key)) < 0
                  and not any(re.fullmatch(p, key) for p in BOUNDED_WITHOUT_TTL))


def pending_total(client: redis.Redis) -> int:
    """Entries of the worker's index, over every shard."""
    return sum(int(client.zcard(keys.pending_all(shard))) for shard in keys.SHARDS)


def _rig(service: Service, redis_server: RedisServer, sim: Simulator) -> Rig:
    # The simulator keeps its own clock: moving the service's days ahead is what matters.
    return build_rig(redis_server.url, sim.url, service.clock, sim.control)


def test_every_growing_key_has_a_ttl_or_is_trimmed(
        service: Service, redis_server: RedisServer, sim: Simulator) -> None:
    """A workload, then ten days on (TTLs passed, the worker run): no key lives without a
    TTL unless the allow-list says what bounds it, and the shared indexes hold nothing that
    ended long ago."""
    rig = _rig(service, redis_server, sim)
    run_workload(rig, 40)
    assert unbounded(service.redis) == []
    assert pending_total(service.redis) > 0
    rig.clock.advance(timedelta(days=10))
    expire_after(service.redis, timedelta(days=10))
    rig.worker_round()
    assert unbounded(service.redis) == []
    assert pending_total(service.redis) == 0
    owners = list(service.redis.scan_iter(match="cbm:{s*}:agent:*:pending"))
    assert [k for k in owners if service.redis.zcard(k)] == []
    # Nothing ended or stale is left in the packed ledger once the sweep has passed.
    for shard in keys.SHARDS:
        assert service.redis.hlen(keys.records(shard)) == 0
        assert service.redis.hlen(keys.windows(shard)) == 0
        assert service.redis.hlen(keys.owner_counts(shard)) == 0


def test_a_callback_costs_what_the_capacity_table_says(
        service: Service, redis_server: RedisServer, sim: Simulator) -> None:
    """Bytes per pending callback (its record and every index entry) and per callback kept
    past the window (evidence and consent, CONSENT_RETENTION_DAYS) stay within the figures
    README "Capacity" is derived from."""
    assert isinstance(service.clock, FixedClock)
    report = measure(_rig(service, redis_server, sim), 120)
    assert report.pending > 60
    assert report.per_kept <= 1536, report.kept_bytes
    assert report.per_pending <= 1000, report.pending_bytes
