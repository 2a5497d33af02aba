"""What the service keeps in Redis: a realistic workload through the product, then the
bytes of every key by kind, per pending callback and per callback past the window.

``python -m tests.memory`` starts its own redis-server and simulator and prints the report
(the README's capacity table is derived from it); ``tests/system/test_memory.py`` runs the
same workload against the suite's Redis and holds the product to its budgets.

A pending callback costs its share of its shard's packed records, windows, walk and owner
counts (``middleware.store.packed``). What a callback leaves past the window
is what is still in Redis once the clock has passed every TTL the ledger sets (the record
lives a week past its time): the evidence history, consent records and consent state.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import falcon.testing
import phonenumbers
import redis

from middleware.app import Services, build_duties, build_services, create_app
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.store import Store, connect, keys
from tests.conftest import AUTH, DEMO_AGENT, DEMO_QUEUE, T0, service_env
from tests.redisservers import client_for

#: Redis' own bookkeeping per key that MEMORY USAGE (which counts the key, its object and
#: its main dictionary entry) leaves out: the main dictionary's bucket, and for a key with a
#: TTL its entry and bucket in the expires dictionary (Redis 7, 64-bit, jemalloc). Checked
#: against INFO used_memory deltas over 20,000 keys.
DICT_BUCKET_BYTES = 8
EXPIRES_ENTRY_BYTES = 32

#: Key kinds, named as in ``middleware/store/keys.py``; the first pattern that matches wins.
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("claim", r"cbm:\{s[0-9a-f]\}:n:[0-9a-f]+:claim"),
        ("pending (number)", r"cbm:\{s[0-9a-f]\}:n:[0-9a-f]+:pending"),
        ("created (daily cap)", r"cbm:\{s[0-9a-f]\}:n:[0-9a-f]+:created"),
        ("consent_state", r"cbm:\{s[0-9a-f]\}:n:[0-9a-f]+:consent"),
        ("events", r"cbm:\{s[0-9a-f]\}:n:[0-9a-f]+:ev"),
        ("record", r"cbm:\{s[0-9a-f]\}:cb:.+"),
        ("records", r"cbm:\{s[0-9a-f]\}:cbs"),
        ("windows", r"cbm:\{s[0-9a-f]\}:np"),
        ("owner_counts", r"cbm:\{s[0-9a-f]\}:owners"),
        ("owned", r"cbm:\{s[0-9a-f]\}:agent:.*:pending"),
        ("outbox_entry", r"cbm:\{s[0-9a-f]\}:outbox:.+"),
        ("consent", r"cbm:\{s[0-9a-f]\}:consent:.+"),
        ("pending_all", r"cbm:\{s[0-9a-f]\}:pending"),
        ("outbox", r"cbm:\{s[0-9a-f]\}:outbox"),
        ("dead", r"cbm:\{s[0-9a-f]\}:dead"),
        ("replacing", r"cbm:\{s[0-9a-f]\}:replacing"),
        ("revoking", r"cbm:\{s[0-9a-f]\}:revoking"),
        ("in_doubt", r"cbm:\{s[0-9a-f]\}:in-doubt"),
        ("orphan_watch", r"cbm:\{s[0-9a-f]\}:orphan-watch"),
        ("orphan_info", r"cbm:\{s[0-9a-f]\}:orphan-watch-info"),
        ("consent_seq", r"cbm:\{s[0-9a-f]\}:consent-seq"),
        ("cursors", r"cbm:\{s[0-9a-f]\}:cursors"),
        ("reconcile", r"cbm:reconcile-(?:pass|queues)"),
        ("change_lock", r"cbm:lock:.+"),
        ("token", r"cbm:token:.+"),
        ("token_lock", r"cbm:token-lock:.+"),
        ("rate", r"cbm:rate:.+"),
        ("idempotency", r"cbm:idem:.+"),
    ))


def kind_of(key: str) -> str:
    """The kind of a key (``other`` when ``keys.py`` names none)."""
    for name, pattern in KINDS:
        if pattern.fullmatch(key):
            return name
    return "other"


@dataclass
class Usage:
    """Keys and bytes of one kind (MEMORY USAGE plus the dictionaries' entries)."""

    keys: int = 0
    bytes: int = 0
    without_ttl: list[str] = field(default_factory=list)


def key_bytes(client: redis.Redis, key: str, ttl: int) -> int:
    """What one key costs Redis, its dictionary entries included."""
    used = int(client.memory_usage(key, samples=0) or 0)
    return used + (DICT_BUCKET_BYTES + (EXPIRES_ENTRY_BYTES if ttl > 0 else 0))


def usage_by_kind(client: redis.Redis) -> dict[str, Usage]:
    """Every key of the database, grouped by kind."""
    found: dict[str, Usage] = {}
    for key in client.scan_iter(count=1000):
        ttl = int(client.ttl(key))
        row = found.setdefault(kind_of(key), Usage())
        row.keys += 1
        row.bytes += key_bytes(client, key, ttl)
        if ttl < 0:
            row.without_ttl.append(key)
    return dict(sorted(found.items()))


def expire_after(client: redis.Redis, elapsed: timedelta) -> int:
    """Do what Redis' expiry would do once ``elapsed`` has passed on the product's clock
    (Redis counts TTLs on its own clock, which a test cannot move): delete every key whose
    TTL ends by then. Returns how many went."""
    gone = 0
    for key in list(client.scan_iter(count=1000)):
        ttl = int(client.ttl(key))
        if 0 <= ttl <= elapsed.total_seconds():
            gone += int(client.delete(key))
    # Packed records and windows (``middleware.store.packed``) carry their own expiry, on
    # Redis' clock too: the product's sweep, told that ``elapsed`` has passed.
    store = Store(client)
    for shard in keys.SHARDS:
        for _ in range(100):
            gone += store.sweep(shard, 1000, int(elapsed.total_seconds() * 1000))
            if client.hmget(keys.cursors(shard), "sweep-records", "sweep-windows") == ["0", "0"]:
                break
    return gone


def numbers(count: int) -> list[str]:
    """``count`` valid US numbers across a few zones (none of the suite's ``TEST_NUMBERS``)."""
    found: list[str] = []
    line = 3000
    while len(found) < count:
        for area in ("415", "212", "305", "312", "206"):
            e164 = f"+1{area}555{line:04d}"
            if phonenumbers.is_valid_number(phonenumbers.parse(e164)):
                found.append(e164)
        line += 1
    return found[:count]


@dataclass
class Workload:
    """What the workload did, for the per-callback figures."""

    created: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    revoked: int = 0
    consents: int = 0
    rescheduled: int = 0
    queued: int = 0


@dataclass
class Rig:
    """The product in-process on one clock, its worker's duties and a plain Redis client."""

    client: falcon.testing.TestClient
    services: Services
    clock: FixedClock
    redis: redis.Redis
    sim: Callable[[str, str, Any], Any]

    def action(self, name: str, body: dict[str, Any], headers: dict[str, str] | None = None
               ) -> dict[str, Any]:
        """POST an action; its JSON answer."""
        return dict(self.client.simulate_post(f"/v1/actions/{name}", json=body,
                                              headers={**AUTH, **(headers or {})}).json)

    def worker_round(self) -> None:
        """Every duty of the worker once."""
        for duty in build_duties(self.services):
            duty.run(Deadline(30))


def build_rig(redis_url: str, sim_url: str, clock: FixedClock,
              sim: Callable[[str, str, Any], Any]) -> Rig:
    """The app and the worker's collaborators on ``clock``."""
    env = service_env(redis_url, sim_url, LOG_LEVEL="WARNING", OUTBOX_BACKOFF_BASE_MS="1",
                      OUTBOX_BACKOFF_CAP_MS="1")
    config = Config.from_env(env)
    app = create_app(config, redis_client=connect(redis_url, 5.0), http=new_session(),
                     clock=clock)
    services = build_services(config, redis_client=connect(redis_url, 5.0),
                              http=new_session(), clock=clock)
    plain = client_for(redis_url)
    return Rig(falcon.testing.TestClient(app), services, clock, plain, sim)


def run_workload(rig: Rig, count: int) -> Workload:
    """Creates (a quarter relying on a consent recorded first, some with an idempotency
    key, one queued in a Genesys outage), then cancels, revocations, a reschedule and
    worker rounds: the mix a contact centre day sends."""
    done = Workload()
    for i, e164 in enumerate(numbers(count)):
        body: dict[str, Any] = {
            "customerNumber": e164, "customerName": "Grace Customer", "agentId": DEMO_AGENT,
            "queueId": DEMO_QUEUE, "consentGiven": True,
            "requestedTime": (T0 + timedelta(hours=1, minutes=i % 180)).isoformat(),
            "conversationId": str(uuid.UUID(int=i + 1)),
        }
        if i % 4 == 0:
            recorded = rig.action("record-consent", {
                "customerNumber": e164, "customerName": "Grace Customer",
                "consentSource": "IVR_KEYPRESS",
                "consentText": "Press 1 to be called back about your order.",
                "conversationId": body["conversationId"], "agentId": DEMO_AGENT})
            body["consentId"] = recorded["consentId"]
            done.consents += 1
        else:
            body.update(consentSource="AGENT_VERBAL",
                        consentText="Customer agreed to be called back.")
        headers = {"Idempotency-Key": f"mem-{i}"} if i % 3 == 0 else None
        if i == 1:
            rig.sim("PUT", "faults", {"status": 503, "count": 1,
                                      "pathPrefix": "/api/v2/conversations/callbacks"})
        answer = rig.action("create-callback", body, headers)
        if answer["outcome"] == "QUEUED":
            done.queued += 1
        if answer["outcome"] in ("CREATED", "QUEUED"):
            done.created.append(str(answer.get("callbackId") or ""))
    rig.clock.advance(timedelta(seconds=30))
    rig.worker_round()
    live = [cid for cid in done.created if cid and not cid.startswith("queued")]
    for cid in live[1::10]:
        if rig.action("cancel-callback", {"callbackId": cid})["outcome"] == "CANCELLED":
            done.cancelled.append(cid)
    if live:
        moved = rig.action("reschedule-callback", {
            "callbackId": live[0], "requestedTime": (T0 + timedelta(hours=4)).isoformat()})
        done.rescheduled += int(moved["outcome"] == "RESCHEDULED")
    for e164 in numbers(count)[5::20]:
        done.revoked += int(rig.action("revoke-consent", {"customerNumber": e164}
                                       )["outcome"] == "REVOKED")
    rig.worker_round()
    return done


@dataclass
class Report:
    """The figures of one run."""

    pending: int
    created: int
    pending_bytes: dict[str, float]
    kept_bytes: dict[str, float]
    before: dict[str, Usage]
    after: dict[str, Usage]

    @property
    def per_pending(self) -> float:
        """Bytes of Redis per pending callback, its indexes included."""
        return sum(self.pending_bytes.values())

    @property
    def per_kept(self) -> float:
        """Bytes per callback kept past the window (evidence and consent)."""
        return sum(self.kept_bytes.values())


#: What a pending callback holds: its record and number set, and its share of the indexes.
PENDING_KINDS = ("records", "windows", "pending_all", "owner_counts")


def measure(rig: Rig, count: int) -> Report:
    """Run the workload, measure, pass every TTL the ledger sets, run the worker, measure."""
    done = run_workload(rig, count)
    client = rig.redis
    before = usage_by_kind(client)
    pending = sum(int(client.zcard(keys.pending_all(shard))) for shard in keys.SHARDS)

    def share(kind: str) -> float:
        return (before[kind].bytes if kind in before else 0) / pending

    # The shards' record hashes hold ended callbacks too (until their expiry): a pending
    # callback is charged its share of all of them, an overstatement.
    pending_bytes = {
        "share of the shards' records": share("records"),
        "share of the shards' windows": share("windows"),
        "share of the shards' pending sets": share("pending_all"),
        "share of the shards' owner counts": share("owner_counts"),
    }
    # Past every window: the longest ledger TTL is a record's, a week past its time.
    rig.clock.advance(timedelta(days=10))
    expire_after(client, timedelta(days=10))
    for _ in range(20):  # the trim duty's pages, until a round finds nothing to drop
        rig.worker_round()
        if not any(client.zcard(keys.pending_all(shard)) for shard in keys.SHARDS):
            break
    after = usage_by_kind(client)
    created = len(done.created)
    kept = {name: row.bytes / created for name, row in after.items()}
    return Report(pending, created, pending_bytes, kept, before, after)


def render(report: Report, count: int) -> str:
    """The report as Markdown."""
    lines = [f"# Redis bytes: {count} numbers, {report.created} callbacks created, "
             f"{report.pending} pending", "", "## Every key, by kind, after the workload", "",
             "| kind | keys | bytes | bytes/key | without TTL |", "|---|---:|---:|---:|---|"]
    for name, row in report.before.items():
        lines.append(f"| {name} | {row.keys} | {row.bytes} | {row.bytes // row.keys} | "
                     f"{', '.join(row.without_ttl) if row.without_ttl else ''} |")
    lines += ["", "## Per pending callback", "", "| part | bytes |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in report.pending_bytes.items()]
    lines += [f"| **total** | **{report.per_pending:.0f}** |", "",
              "## Kept past the window, per callback created (10 days on, TTLs passed, "
              "worker run)", "", "| kind | keys | bytes/callback | without TTL |",
              "|---|---:|---:|---|"]
    for name, row in report.after.items():
        lines.append(f"| {name} | {row.keys} | {report.kept_bytes[name]:.0f} | "
                     f"{', '.join(row.without_ttl) if row.without_ttl else ''} |")
    lines.append(f"| **total** | | **{report.per_kept:.0f}** | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start redis-server and the simulator, run the workload, print the report."""
    from tests.conftest import _serve_sim, start_redis

    parser = argparse.ArgumentParser(prog="python -m tests.memory",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--numbers", type=int, default=400)
    args = parser.parse_args(argv)
    clock = FixedClock(T0)
    simulator, server = _serve_sim(clock)
    with tempfile.TemporaryDirectory() as directory:
        redis_server = start_redis(Path(directory) / "redis")
        try:
            simulator.control("PUT", "ratelimit", {"perMinute": 100_000})
            rig = build_rig(redis_server.url, simulator.url, clock,
                            simulator.control)
            print(render(measure(rig, args.numbers), args.numbers))
        finally:
            server.shutdown()
            redis_server.process.kill()
            redis_server.process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
