"""The packed ledger layout (``middleware.store.packed``): what is written reads back
exactly, the layout before it is read and rewritten by the first change, the sweep takes
only what has expired, and the walk pages through ties in a millisecond without a skip.
Each against the real Redis of the run (a cluster under ``TEST_REDIS=cluster``)."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from middleware.ledger.records import LedgerRecord, State
from middleware.store import Store, keys
from middleware.store.packed import with_layer
from tests.ledger_check import ledger_problems

_WRITE = with_layer("""
R_set(KEYS[1], unpack(ARGV))
return 1
""")


def _digest(rnd: random.Random, shard: str = "3") -> str:
    return shard + f"{rnd.getrandbits(128):032x}"


def _uuid(rnd: random.Random) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128)))


def _value(rnd: random.Random) -> str:
    """Values of every kind the codec has, and of none: each must read back as written."""
    return rnd.choice([
        _uuid(rnd), _uuid(rnd).upper(), str(rnd.randrange(2**48)), str(2**48), "-1", "007",
        "", "0", f"{rnd.getrandbits(128):032x}", "abc", "x" * 300, "PENDING", "pending",
        ",".join(_digest(rnd) for _ in range(rnd.randint(1, 3))), _digest(rnd) + ",",
        "+12025550123", "queued-" + f"{rnd.getrandbits(64):016x}", "\u00e9t\u00e9"])


def test_a_record_reads_back_exactly_as_written(redis_client: Any) -> None:
    """Seeded random records, every field drawn from values that fit its kind and values
    that do not (and fields the codec does not know): the store reads each back
    unchanged."""
    store = Store(redis_client)
    rnd = random.Random(4101)  # noqa: S311 (test data, not keys)
    names = ["s", "a", "q", "st", "x", "t", "c", "k", "e", "r", "rf", "ns", "v", "ep", "cx",
             "dx", "rx", "n", "zz", "other"]
    for i in range(150):
        callback_id = rnd.choice([_uuid(rnd), f"cb-{i}", f"queued-{i:032x}"])
        fields = {name: _value(rnd) for name in rnd.sample(names, rnd.randint(1, len(names)))}
        redis_client.eval(_WRITE, 1, keys.record("3", callback_id),
                          *[x for pair in fields.items() for x in pair])
        assert store.callback(callback_id, "3") == {"id": callback_id, **fields}
        assert store.callback(callback_id) == {"id": callback_id, **fields}


def _record(rnd: random.Random, digest: str, agent: str, state: str = "PENDING"
            ) -> LedgerRecord:
    return LedgerRecord(
        callback_id=_uuid(rnd), number_key=digest, scheduled_ms=1_900_000_000_000,
        agent_id=agent, queue_id=_uuid(rnd), state=state, acd_id=_uuid(rnd),
        request_token=f"{rnd.getrandbits(128):032x}", created_ms=1_899_000_000_000,
        consent_id=_uuid(rnd), e164="+12025550123", number_keys=(digest,))


def test_the_layout_before_is_read_then_rewritten_by_the_first_change(
        redis_client: Any) -> None:
    """A callback kept as the release before kept it (a hash with a TTL, the number's
    sorted set, its text id in the walk, the owner's sorted set) is found and counted as
    it was; closing it rewrites it in the packed form and leaves none of the old keys."""
    store = Store(redis_client)
    rnd = random.Random(4102)  # noqa: S311 (test data, not keys)
    digest, agent = _digest(rnd), _uuid(rnd)
    record = _record(rnd, digest, agent)
    shard = record.shard
    old = keys.record(shard, record.callback_id)
    redis_client.hset(old, mapping=record.to_fields())
    redis_client.expire(old, 86_400)
    redis_client.zadd(keys.pending(digest), {record.callback_id: record.scheduled_ms})
    redis_client.expire(keys.pending(digest), 86_400)
    redis_client.zadd(keys.pending_all(shard), {record.callback_id: record.scheduled_ms})
    redis_client.zadd(keys.owned(shard, agent), {record.callback_id: record.scheduled_ms})

    assert store.pending_in_window((digest,), 2**47) == [
        (record.callback_id, record.scheduled_ms)]
    assert LedgerRecord.from_fields(store.callback(record.callback_id) or {}) == record
    assert store.pending_page(shard, (-1, ""), 10) == [
        (record.callback_id, record.scheduled_ms)]
    assert store.pending_owned_counts([agent], 1_899_000_000_000) == {agent: 1}

    store.close_callback(record, State.CANCELLED, None, 86_400)
    assert redis_client.exists(old, keys.pending(digest)) == 0
    assert redis_client.zcard(keys.owned(shard, agent)) == 0
    assert redis_client.zcard(keys.pending_all(shard)) == 0
    assert (store.callback(record.callback_id) or {}).get("st") == "CANCELLED"
    assert store.pending_in_window((digest,), 2**47) == []
    assert store.pending_owned_counts([agent], 1_899_000_000_000) == {agent: 0}
    assert ledger_problems(redis_client) == []


def test_the_sweep_takes_only_what_has_expired(redis_client: Any) -> None:
    """Of callbacks kept for an hour and for ten days, a sweep told a day has passed takes
    the first (record, window, walk entry, owner's count) and leaves the rest as they were."""
    store = Store(redis_client)
    rnd = random.Random(4103)  # noqa: S311 (test data, not keys)
    agent = _uuid(rnd)
    short = [_record(rnd, _digest(rnd, s), agent) for s in "3a"]
    long = [_record(rnd, _digest(rnd, s), agent) for s in "3a"]
    for ttl_s, group in ((3_600, short), (10 * 86_400, long)):
        for record in group:
            store.commit_callback(record.number_key, "t", record, ttl_s,
                                  {"e": "cb", "t": 1}, 60)
    assert store.pending_owned_counts([agent], 0) == {agent: 4}
    assert ledger_problems(redis_client) == []
    for shard in "3a":
        assert store.sweep(shard, 100, ahead_ms=86_400_000) == 2  # a record and its window
    assert store.pending_owned_counts([agent], 0) == {agent: 2}
    for record in short:
        assert store.callback(record.callback_id) is None
        assert store.pending_in_window(record.digests, 2**47) == []
    for record in long:
        assert store.callback(record.callback_id) is not None
        assert store.pending_in_window(record.digests, 2**47) == [
            (record.callback_id, record.scheduled_ms)]
    assert ledger_problems(redis_client) == []
    # The check itself can fail: a count that says one more than the records.
    redis_client.hincrby(keys.owner_counts("3"), agent, 1)
    assert ledger_problems(redis_client) != []


def test_the_walk_pages_through_a_crowded_millisecond_without_a_skip(
        redis_client: Any) -> None:
    """Ids stored as bytes sort apart from their text: pages of two through callbacks that
    share milliseconds still give each exactly once, in time then id order."""
    store = Store(redis_client)
    rnd = random.Random(4104)  # noqa: S311 (test data, not keys)
    add = with_layer("W_add(KEYS[1], ARGV[1], ARGV[2]); return 1")
    # The case found by review: a binary and a text id inside a millisecond between others.
    fixed = [("a1", 10), ("a2", 10), ("ffffffff-ffff-4fff-afff-ffffffffffff", 20),
             ("00000000-0000-4000-a000-000000000000", 20), ("d", 30)]
    runs = [(5, fixed, {"00000000-0000-4000-a000-000000000000", "a1", "a2", "d"})]
    for size in (2, 3, 5) * 8:
        entries = [(rnd.choice([_uuid(rnd), f"cb-{i}", f"{i:02d}" + _uuid(rnd)[2:]]),
                    rnd.choice([1000, 1000, 2000, 2000, 3000, 4000])) for i in range(40)]
        runs.append((size, entries, {c for c, _ in entries if rnd.random() < 0.4}))
    for size, entries, as_text in runs:
        redis_client.delete(keys.pending_all("5"))
        for callback_id, ms in entries:
            if callback_id in as_text:
                # An entry as the layout before kept it: its id as text.
                redis_client.zadd(keys.pending_all("5"), {callback_id: ms})
            else:
                redis_client.eval(add, 1, keys.pending_all("5"), ms, callback_id)
        seen: list[tuple[str, int]] = []
        cursor = (-1, "")
        for _ in range(60):
            page = store.pending_page("5", cursor, size)
            if not page:
                break
            seen += page
            cursor = (page[-1][1], page[-1][0])
        assert seen == sorted(entries, key=lambda e: (e[1], e[0])), size



def test_the_sweep_takes_a_walk_entry_of_the_layout_before(redis_client: Any) -> None:
    """A record of the layout before that a step rewrote without touching the walk (a
    cancel being marked) still has its text id in the walk: the sweep takes that too."""
    store = Store(redis_client)
    rnd = random.Random(4105)  # noqa: S311 (test data, not keys)
    record = _record(rnd, _digest(rnd), _uuid(rnd))
    old = keys.record(record.shard, record.callback_id)
    redis_client.hset(old, mapping=record.to_fields())
    redis_client.expire(old, 60)
    redis_client.zadd(keys.pending_all(record.shard), {record.callback_id: record.scheduled_ms})
    store.mark_cancel_asked(record.shard, record.callback_id)
    assert redis_client.exists(old) == 0
    assert store.sweep(record.shard, 100, ahead_ms=3_600_000) == 1
    assert store.callback(record.callback_id) is None
    assert redis_client.zcard(keys.pending_all(record.shard)) == 0


def test_past_its_expiry_a_callback_reads_as_gone_before_the_sweep(
        redis_client: Any) -> None:
    """A record and window past their own expiry read as absent at once, as keys past
    their TTL did, not only once the sweep has been by; the sweep then deletes them and
    their owner's count, and a new callback for the number starts a window of its own."""
    store = Store(redis_client)
    rnd = random.Random(4105)  # noqa: S311 (test data, not keys)
    agent = _uuid(rnd)
    gone = _record(rnd, _digest(rnd), agent)
    kept = _record(rnd, _digest(rnd), agent)
    store.commit_callback(gone.number_key, "t", gone, 1, {"e": "cb", "t": 1}, 1)
    store.commit_callback(kept.number_key, "t", kept, 3_600, {"e": "cb", "t": 1}, 3_600)
    assert store.callback(gone.callback_id) is not None
    deadline = time.monotonic() + 5
    while store.callback(gone.callback_id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.callback(gone.callback_id) is None
    assert store.pending_in_window(gone.digests, 2**47) == []
    assert store.callback(kept.callback_id) is not None
    assert store.pending_in_window(kept.digests, 2**47) == [
        (kept.callback_id, kept.scheduled_ms)]
    # Still held until swept, and counted until then: the sweep takes record and window.
    assert redis_client.hlen(keys.records(gone.shard)) == 2
    assert ledger_problems(redis_client) == []
    store.close_callback(gone, State.CANCELLED, None, 86_400)
    assert store.callback(gone.callback_id) is None
    assert ledger_problems(redis_client) == []
    assert store.sweep(gone.shard, 100) == 2
    assert store.pending_owned_counts([agent], 0) == {agent: 1}
    again = _record(rnd, gone.number_key, agent)
    store.commit_callback(again.number_key, "t", again, 3_600, {"e": "cb", "t": 1}, 3_600)
    assert store.pending_in_window(again.digests, 2**47) == [
        (again.callback_id, again.scheduled_ms)]
    assert ledger_problems(redis_client) == []
