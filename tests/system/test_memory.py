"""Redis stays small and bounded (README "Capacity"): after a realistic workload, every key
that grows with traffic has a TTL or is trimmed by a bounded duty, and a callback costs
what the README's capacity table says."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import redis

from middleware.clock import FixedClock
from tests.conftest import RedisServer, Service, Simulator
from tests.memory import Rig, build_rig, expire_after, measure, run_workload

#: Keys allowed to live without a TTL, each with what bounds it.
BOUNDED_WITHOUT_TTL: dict[str, str] = {
    # The worker's walk of pending callbacks: the trim duty drops entries scheduled before
    # the window and a week ago and entries whose records are gone, a page per round.
    r"cbm:pending": "pending callbacks (trimmed by the trim duty)",
    # Outbox schedule and entries: each leaves when delivered, abandoned or dead-lettered.
    r"cbm:outbox": "creates waiting for Genesys",
    r"cbm:outbox:.+": "creates waiting for Genesys, and dead letters",
    # Dead letters are never dropped (SPEC §4 Worker): one per create Genesys refused, gone
    # when replayed; counted in metrics.
    r"cbm:dead": "dead letters until replayed",
    # Callbacks awaiting a disconnect: removed when done; the trim duty drops those whose
    # records are gone.
    r"cbm:replacing": "owner moves awaiting a disconnect (trimmed)",
    r"cbm:revoking": "revocations awaiting a disconnect (trimmed)",
    # Watched creates: a watch ends LATE_CREATE_WATCH (15 min) after its last attempt and
    # watched_orphans drops it then.
    r"cbm:orphan-watch": "creates that may still land, for 15 minutes",
    r"cbm:orphan-watch-info": "the same tokens' numbers",
    # One counter and fixed cursors: constant size.
    r"cbm:consent-seq": "one integer",
    r"cbm:(reconcile|reassign|orphan|trim)-cursor": "one cursor each",
    r"cbm:reconcile-pass": "the interval reconciliation's progress, one value",
    # Reconciliation's queue list: queues not seen on a pending callback for a while are
    # dropped each time it is read.
    r"cbm:reconcile-queues": "the queues pending callbacks are on",
    # Changes in doubt: each leaves when reconciliation has read its callback back.
    r"cbm:in-doubt": "callbacks whose cancel or reschedule is in doubt",
}


def unbounded(client: redis.Redis) -> list[str]:
    """Keys with no TTL that the allow-list does not name."""
    return sorted(key for key in client.scan_iter(count=1000)
                  if int(client.ttl(key)) < 0
                  and not any(re.fullmatch(p, key) for p in BOUNDED_WITHOUT_TTL))


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
    assert service.redis.zcard("cbm:pending") > 0
    rig.clock.advance(timedelta(days=10))
    expire_after(service.redis, timedelta(days=10))
    rig.worker_round()
    assert unbounded(service.redis) == []
    assert service.redis.zcard("cbm:pending") == 0
    owners = list(service.redis.scan_iter(match="cbm:agent:*:pending"))
    assert [k for k in owners if service.redis.zcard(k)] == []


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


def test_evidence_written_in_the_old_long_form_still_reads(
        service: Service, redis_server: RedisServer, sim: Simulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A history stream and a consent record stored before events were compact are shown
    by consent-evidence in order, before the compact events written since, with the same
    names."""
    from middleware.__main__ import run
    from middleware.rules.number import NumberKeys
    from middleware.store import keys
    from tests.conftest import create_body, service_env

    digest = NumberKeys(service.config.pii_keys).current("+14155552671")
    old_consent = {"consentId": "0ld00000-0000-4000-8000-000000000001", "kind": "CONSENT",
                   "numberKey": digest, "number": "+14155552671", "customerName": "Old",
                   "consentSource": "SMS", "capturedAt": "2020-01-01T00:00:00.000+00:00",
                   "consentText": "YES", "conversationId": "", "agentId": "",
                   "recordedAt": "2020-01-01T00:00:00.000+00:00", "via": "record-consent"}
    service.redis.xadd(keys.history(digest), {"event": "consent", **old_consent})
    service.redis.xadd(keys.history(digest), {
        "event": "callback-closed", "callbackId": "old-callback", "state": "COMPLETED",
        "at": "2020-01-02T00:00:00.000+00:00"})
    service.redis.hset(keys.consent(old_consent["consentId"]), mapping=old_consent)
    assert service.action("create-callback", create_body()).json["outcome"] == "CREATED"
    env = service_env(redis_server.url, sim.url)
    assert run(["consent-evidence", "--number", "+14155552671", "--format", "json"], env,
               service.clock, own_logging=False) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [e["event"] for e in events] == ["consent", "callback-closed", "consent",
                                            "callback"]
    assert events[0] == {"event": "consent", **old_consent}
    assert events[1]["state"] == "COMPLETED"
    assert events[2]["customerName"] == "Grace Customer" and events[2]["recordedAt"]
    assert events[3]["state"] == "PENDING" and events[3]["consentId"] == \
        events[2]["consentId"]
