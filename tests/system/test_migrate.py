"""migrate-keys: a dataset written in the layout before shards, moved, then used through the
product as if it had always been sharded."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis

from middleware.__main__ import run as main_run
from middleware.actions.answers import create_command
from middleware.clock import FixedClock
from middleware.ledger.lifecycle import epoch_ms
from middleware.rules.number import NumberKeys, normalise
from middleware.store import connect, keys
from middleware.store.migrate import migrate_keys
from tests.conftest import (
    DEMO_AGENT,
    DEMO_QUEUE,
    PII_KEY,
    T0,
    TEST_REDIS,
    RedisServer,
    Service,
    Simulator,
    assert_no_numbers,
    create_body,
    service_env,
    when,
)

pytestmark = pytest.mark.skipif(TEST_REDIS == "cluster", reason=(
    "releases before shards ran on one primary only: there is no old dataset on a cluster"))

PENDING_NUMBER = "+14155552671"  # a pending callback, its consent and old evidence
QUEUED_NUMBER = "+12125550199"  # a create waiting in the outbox
DEAD_NUMBER = "+442079460958"  # a create that died
LIFTED_NUMBER = "+13055550123"  # revoked, then a consent that lifted the revocation
UNKNOWN_NUMBER = "+16135550123"  # a claim and a daily count, and no record names it
NOW = epoch_ms(T0)
HOUR = 3_600_000
WEEK_S = 7 * 86_400
RETENTION_S = 5 * 365 * 86_400
CALLBACK_ID = "cb0a0000-0000-4000-8000-00000000000a"
STREAM_CONSENT_ID = "5a0a0000-0000-4000-8000-00000000005a"
#: The old release's revocation counter after the last consent it stored.
OLD_SEQ = 44


def old_digest(e164: str) -> str:
    """A digest as the release before shards wrote it: 32 hex of the HMAC alone."""
    return hmac.new(PII_KEY.encode(), e164.encode(), hashlib.sha256).hexdigest()[:32]


def number_key(e164: str, kind: str) -> str:
    """One of a number's keys in the layout before shards."""
    return f"cbm:{{n:{old_digest(e164)}}}:{kind}"


def event(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


class OldRelease:
    """Writes keys the way the release before shards did (its scripts are in git at
    64ca066: store/ledger.py, store/consent.py, store/outbox.py, store/orphans.py)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def consent(self, e164: str, seq: int, *, kind: str = "CONSENT",
                via: str = "record-consent", captured_ms: int = NOW - HOUR) -> str:
        """``save_consent``: the record (short names, epoch ms), its store order, the
        number's state and its evidence event."""
        consent_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"consent/{seq}"))
        record = f"cbm:consent:{consent_id}"
        self.r.hset(record, mapping={
            "k": kind, "n": old_digest(e164), "e": e164, "src": "IVR_KEYPRESS",
            "c": captured_ms, "tx": "Press 1 to be called back (script v2)",
            "r": captured_ms, "v": via, "seq": seq})
        self.r.expire(record, RETENTION_S)
        state = number_key(e164, "consent")
        if kind == "REVOCATION":
            self.r.hset(state, mapping={"revokedMs": captured_ms, "revokedSeq": seq})
        elif via == "record-consent":
            self.r.hset(state, mapping={"liftedMs": captured_ms, "liftedSeq": seq})
        if self.r.exists(state):
            self.r.expire(state, RETENTION_S)
        self.history(e164, event(e="rv" if kind == "REVOCATION" else "co", t=captured_ms,
                                 k=consent_id))
        self.r.set("cbm:consent-seq", max(seq, int(self.r.get("cbm:consent-seq") or 0)))
        return consent_id

    def history(self, e164: str, entry: str) -> None:
        self.r.rpush(number_key(e164, "ev"), entry)
        self.r.expire(number_key(e164, "ev"), RETENTION_S)

    def callback(self, e164: str, callback_id: str, token: str, state: str,
                 consent_id: str, scheduled_ms: int, *, indexed: bool = True) -> None:
        """A ledger record (``LedgerRecord.to_fields``: no ``id``, no ``n``) and, while it
        is pending, the number's window, the global index and its owner's set."""
        record = f"cbm:cb:{callback_id}"
        self.r.hset(record, mapping={
            "s": scheduled_ms, "a": DEMO_AGENT, "q": DEMO_QUEUE, "st": state, "t": token,
            "c": NOW - HOUR, "k": consent_id, "e": e164, "ns": old_digest(e164), "v": 2,
            "ep": 0})
        if state == "PENDING":
            self.r.hset(record, "x", "acd-0001")
        ttl = (scheduled_ms - NOW) // 1000 + WEEK_S
        self.r.expire(record, ttl)
        self.r.zadd(number_key(e164, "created"), {token: NOW - HOUR})
        self.r.pexpire(number_key(e164, "created"), 86_400_000 + HOUR)
        if indexed:
            for key in (number_key(e164, "pending"), f"cbm:agent:{DEMO_AGENT}:pending"):
                self.r.zadd(key, {callback_id: scheduled_ms})
                self.r.expire(key, ttl)
            self.r.zadd("cbm:pending", {callback_id: scheduled_ms})
        self.history(e164, event(e="cb" if state == "PENDING" else "cq", t=NOW - HOUR,
                                 i=callback_id, k=consent_id, a=DEMO_AGENT, q=DEMO_QUEUE,
                                 s=scheduled_ms))

    def outbox_entry(self, e164: str, token: str, consent_id: str, scheduled: str,
                     **fields: Any) -> None:
        """An outbox entry: the exact create command and its story (``OutboxPayload``)."""
        number = normalise(e164, "US")
        assert number is not None
        command = create_command(create_body(customerNumber=e164), number, DEMO_AGENT,
                                 scheduled, token, consent_id)
        self.r.hset(f"cbm:outbox:{token}", mapping={
            "payload": json.dumps({"command": command, "ledgerId": f"queued-{token}",
                                   "e164": e164, "mayHaveRun": False,
                                   "acceptedMs": NOW - HOUR}),
            "attempts": 0, "error": "", **fields})


def write_old_dataset(client: redis.Redis) -> dict[str, str]:
    """Every kind of key the release before shards kept, for five numbers; the tokens."""
    old = OldRelease(client)
    # The evidence stream came before the lists: its events are long form, a consent's
    # carrying a copy of its record.
    client.xadd(number_key(PENDING_NUMBER, "history"), {
        "event": "consent", "consentId": STREAM_CONSENT_ID, "kind": "CONSENT",
        "numberKey": old_digest(PENDING_NUMBER), "number": PENDING_NUMBER,
        "consentSource": "AGENT_VERBAL", "capturedAt": when("2026-11-20T10:00:00.000+00:00"),
        "recordedAt": when("2026-11-20T10:00:00.000+00:00"), "via": "record-consent"})
    client.expire(number_key(PENDING_NUMBER, "history"), RETENTION_S)
    revocation = old.consent(LIFTED_NUMBER, 40, kind="REVOCATION", via="revoke-consent",
                             captured_ms=NOW - 3 * HOUR)
    old.consent(LIFTED_NUMBER, 41, captured_ms=NOW - 2 * HOUR)
    consent = old.consent(PENDING_NUMBER, 42)
    scheduled = epoch_ms(T0 + timedelta(hours=1))
    old.callback(PENDING_NUMBER, CALLBACK_ID, "tok-pending", "PENDING", consent, scheduled)

    queued_consent = old.consent(QUEUED_NUMBER, 43, via="create-callback")
    queued_at = when("2026-11-23T20:00:00Z")
    old.callback(QUEUED_NUMBER, "queued-tok-queued", "tok-queued", "QUEUED", queued_consent,
                 epoch_ms(T0 + timedelta(hours=2)))
    old.outbox_entry(QUEUED_NUMBER, "tok-queued", queued_consent, queued_at)
    client.zadd("cbm:outbox", {"tok-queued": NOW - 1000})

    dead_consent = old.consent(DEAD_NUMBER, OLD_SEQ, via="create-callback")
    old.callback(DEAD_NUMBER, "queued-tok-dead", "tok-dead", "DEAD_LETTER", dead_consent,
                 epoch_ms(T0 + timedelta(hours=3)), indexed=False)
    old.outbox_entry(DEAD_NUMBER, "tok-dead", dead_consent, when("2026-11-23T21:00:00Z"),
                     attempts=8, error="400 bad.request refused")
    client.zadd("cbm:dead", {"tok-dead": NOW - 60_000})

    # A create given up on whose callback may still land: watched by its token.
    client.zadd("cbm:orphan-watch", {"tok-orphan": NOW + 15 * 60_000})
    client.hset("cbm:orphan-watch-info", "tok-orphan",
                json.dumps({"e": QUEUED_NUMBER, "s": NOW - HOUR}))
    # A cancel in doubt of a callback whose record is gone, and the walks' cursors.
    client.zadd("cbm:in-doubt", {"cb-gone-0000": NOW})
    client.set("cbm:reconcile-cursor", f"{scheduled} {CALLBACK_ID}")
    client.set("cbm:trim-cursor", "0")
    # A number no record names: its claim and daily count cannot be placed.
    client.set(number_key(UNKNOWN_NUMBER, "claim"), "tok-unknown", px=20_000)
    client.zadd(number_key(UNKNOWN_NUMBER, "created"), {"tok-unknown": NOW - HOUR})
    client.pexpire(number_key(UNKNOWN_NUMBER, "created"), 86_400_000)
    return {"revocation": revocation, "consent": consent}


OLD_KEY = re.compile(r"cbm:(\{n:[0-9a-f]{32}\}:.*|cb:.*|consent:.*|outbox.*|dead|pending|"
                     r"agent:.*|replacing|revoking|in-doubt|orphan-watch.*|consent-seq|"
                     r".*-cursor)")


def old_keys(client: redis.Redis) -> list[str]:
    """Every key of the layout before shards still in Redis."""
    return sorted(k for k in client.scan_iter("cbm:*") if OLD_KEY.fullmatch(k))


def migrate(redis_server: RedisServer, capsys: pytest.CaptureFixture[str], *args: str
            ) -> tuple[int, str, str]:
    """Run migrate-keys on only REDIS_URL and PII_KEYS: exit status, stdout, stderr."""
    capsys.readouterr()
    status = main_run(["migrate-keys", *args],
                      {"REDIS_URL": redis_server.url, "PII_KEYS": PII_KEY},
                      FixedClock(T0), own_logging=False)
    out, err = capsys.readouterr()
    assert_no_numbers(out + err, "migrate-keys' output")
    return status, out, err


def test_migrated_dataset_works_through_the_product(
        service: Service, redis_server: RedisServer, sim: Simulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    """After migrate-keys the old callback, consents, outbox and dead letter are the
    product's own: found, duplicate-checked, evidenced, delivered; /readyz is ready, the
    revocation order holds, and a second run moves nothing."""
    client = service.redis
    write_old_dataset(client)
    record_ttl = client.pttl(f"cbm:cb:{CALLBACK_ID}")
    assert service.client.simulate_get("/readyz").status_code == 503

    status, out, err = migrate(redis_server, capsys)
    assert status == 0, out + err
    assert "left: 2 key(s)" in out and "its number is known from no record" in out, out
    assert "dropped: 1 index member whose record or entry is gone" in out, out
    assert "dropped: 2 cursor" in out, out
    assert f"starts at {OLD_SEQ}" in out, out
    assert "migrate-keys: done" in err, err
    assert old_keys(client) == sorted([number_key(UNKNOWN_NUMBER, "claim"),
                                       number_key(UNKNOWN_NUMBER, "created")])

    shard = NumberKeys.shard(PENDING_NUMBER)
    moved = keys.record(shard, CALLBACK_ID)
    assert client.hget(moved, "ns") == shard + old_digest(PENDING_NUMBER)
    assert abs(client.pttl(moved) - record_ttl) < 5_000, "the record keeps its lifetime"
    assert service.client.simulate_get("/readyz").status_code == 200

    found = service.action("find-pending-callbacks", {"customerNumber": PENDING_NUMBER}).json
    assert found["outcome"] == "FOUND" and found["callbackId"] == CALLBACK_ID, found
    again = service.action("create-callback", create_body(customerNumber=PENDING_NUMBER)).json
    assert again["outcome"] == "DUPLICATE", again
    assert again["existingCallbackId"] == CALLBACK_ID, again

    capsys.readouterr()
    assert main_run(["consent-evidence", "--number", PENDING_NUMBER, "--format", "json"],
                    {"REDIS_URL": redis_server.url, "PII_KEYS": PII_KEY}, FixedClock(T0),
                    own_logging=False) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [e["event"] for e in events] == ["consent", "consent", "callback"], events
    assert events[0]["consentId"] == STREAM_CONSENT_ID, events
    assert events[1]["consentSource"] == "IVR_KEYPRESS" and "script v2" in \
        events[1]["consentText"], events
    assert events[2]["callbackId"] == CALLBACK_ID, events

    assert main_run(["dead-letters", "list"], {"REDIS_URL": redis_server.url,
                                               "PII_KEYS": PII_KEY}, FixedClock(T0),
                    own_logging=False) == 0
    listed = capsys.readouterr().out
    assert "tok-dead" in listed and "1 dead letter(s)" in listed, listed

    assert main_run(["worker", "--once"], service_env(redis_server.url, sim.url),
                    FixedClock(T0), own_logging=False) == 0
    delivered = [c for c in sim.callbacks() if "tok-queued" in json.dumps(c)]
    assert len(delivered) == 1, sim.callbacks()
    queued = service.action("find-pending-callbacks", {"customerNumber": QUEUED_NUMBER}).json
    assert queued["outcome"] == "FOUND" and queued["callbackId"], queued

    # Revoked (seq 40), then lifted (seq 41) by the old release: a revocation stored now
    # must outnumber the lift, or the number would stay callable.
    revoked = service.action("revoke-consent", {"customerNumber": LIFTED_NUMBER}).json
    assert revoked["outcome"] == "REVOKED", revoked
    refused = service.action("create-callback", create_body(customerNumber=LIFTED_NUMBER)).json
    assert refused["reason"] == "CONSENT_REVOKED", refused

    status, out, _ = migrate(redis_server, capsys)
    assert status == 0, out
    assert "moved: 0 key(s)" in out and "moved: 0 index member(s)" in out, out


def snapshot(redis_server: RedisServer) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's serialized value and whether it expires."""
    raw = redis.Redis.from_url(redis_server.url)
    try:
        return {k: (raw.dump(k), raw.pttl(k) > 0) for k in raw.scan_iter("*")}
    finally:
        raw.close()


def test_dry_run_writes_nothing_and_says_what_would_move(
        service: Service, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run over the old dataset leaves every key as it was, counts what a run would
    move, and the service stays not ready."""
    write_old_dataset(service.redis)
    before = snapshot(redis_server)
    status, out, _ = migrate(redis_server, capsys, "--dry-run")
    assert status == 0, out
    assert snapshot(redis_server) == before
    would = re.search(r"would move: (\d+) key\(s\)", out)
    assert would is not None and int(would[1]) > 10, out
    assert "would move: 8 index member(s)" in out, out
    assert service.client.simulate_get("/readyz").status_code == 503

    status, out, _ = migrate(redis_server, capsys)
    assert status == 0, out
    moved = re.search(r"^moved: (\d+) key\(s\)", out, re.M)
    assert moved is not None and moved[1] == would[1], out


def contents(redis_server: RedisServer) -> dict[str, Any]:
    """Every key's type and value, read by type (member order as Redis keeps it)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    found: dict[str, Any] = {}
    try:
        for key in client.scan_iter("*"):
            kind = client.type(key)
            found[key] = (kind, {
                "string": client.get, "hash": client.hgetall,
                "list": lambda k: client.lrange(k, 0, -1),
                "set": lambda k: sorted(client.smembers(k)),
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            }[kind](key), client.pttl(key) > 0)
    finally:
        client.close()
    return found


class Interrupted(Exception):
    """Stands for a Ctrl-C or a lost connection between two moves."""


def test_an_interrupted_run_resumes_to_the_same_result(
        redis_client: redis.Redis, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Runs stopped after every few moves, each followed by another, end where one run
    ends: nothing moved twice, nothing lost."""
    write_old_dataset(redis_client)
    migrate(redis_server, capsys)
    expected = contents(redis_server)

    redis_client.flushall()
    write_old_dataset(redis_client)
    numbers = NumberKeys((PII_KEY.encode(),))
    stops = 0
    for _ in range(50):
        def progress(line: str) -> None:
            # Each progress line comes after a move: the next run starts from there.
            if "handled:" in line:
                raise Interrupted

        try:
            migrate_keys(connect(redis_server.url, 5.0), numbers.shard, numbers.all,
                         dry_run=False, progress=progress, every=3)
            break
        except Interrupted:
            stops += 1
    assert stops >= 3, "the run was never cut short"
    assert contents(redis_server) == expected
