"""Moving a dataset of the layout before shards into the sharded one (``keys``), on the one
primary the releases before shards ran on (``python -m middleware migrate-keys``).

Before shards, a number's keys were tagged ``{n:<digest>}`` with a 32-hex HMAC digest, and
each index (pending callbacks, outbox, dead letters, owners' sets, ...) was one key for the
whole store. A number's new digest is its shard followed by the old digest, and its shard
is a hash of the number itself, which no digest reveals: the migration learns the number
behind each digest from whatever names both (ledger records, consent records, outbox
entries, the orphan watch, consent events of the evidence stream written before lists, the
answers kept for idempotency keys). A key of a number learnt nowhere stays where it is and
is reported; such keys (a claim, a daily count) expire within a day.

Each key moves in one watched transaction that writes its copy and deletes it, and an
index moves a chunk of members at a time the same way: an interrupted run leaves every key
or member either where it was or moved, and a second run moves what is left. Run it with
the release before shards stopped: keys it writes after the first SCAN are not seen.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis

from middleware.store import keys
from middleware.store.client import Connection, event_json

#: One command of a move, as sent: its name and arguments.
Op = tuple[str, tuple[Any, ...]]
#: What a move plans on the Redis it reads (the watching pipeline, or the client on a dry
#: run): the commands to send, ``None`` when the key is gone.
Plan = Callable[[Any], list[Op] | None]

P: Final = keys.PREFIX
#: The old indexes, each one key for the whole store, by what their members are.
OLD_CALLBACK_ZSETS: Final = (f"{P}pending", f"{P}in-doubt")
OLD_CALLBACK_SETS: Final = (f"{P}replacing", f"{P}revoking")
OLD_TOKEN_ZSETS: Final = (f"{P}outbox", f"{P}dead")
OLD_ORPHAN_WATCH: Final = f"{P}orphan-watch"
OLD_ORPHAN_INFO: Final = f"{P}orphan-watch-info"
OLD_CONSENT_SEQ: Final = f"{P}consent-seq"
#: The old walks' cursors: the shards' walks start afresh.
OLD_CURSORS: Final = tuple(f"{P}{name}-cursor" for name in (
    "reconcile", "reassign", "orphan", "trim"))
#: What ``Store.legacy_keys`` looks for: while one is left, /readyz is not ready.
BLOCKING: Final = (f"{P}pending", f"{P}outbox", f"{P}dead", OLD_CONSENT_SEQ)

_OLD_NUMBER: Final = re.compile(
    r"cbm:\{n:([0-9a-f]{32})\}:(claim|pending|created|ev|history|consent)")
_OLD_RECORD: Final = re.compile(r"cbm:cb:([^:{}]+)")
_OLD_LOCK: Final = re.compile(r"cbm:cb:([^:{}]+):lock")
_OLD_CONSENT: Final = re.compile(r"cbm:consent:([^:{}]+)")
_OLD_ENTRY: Final = re.compile(r"cbm:outbox:([^:{}]+)")
_OLD_OWNED: Final = re.compile(r"cbm:agent:([^:{}]*):pending")
_NEW_ITEM: Final = re.compile(r"cbm:\{s([0-9a-f])\}:(cb|consent|outbox):([^:{}]+)")
_NEW_ORPHAN_INFO: Final = re.compile(r"cbm:\{s([0-9a-f])\}:orphan-watch-info")
_IDEMPOTENCY: Final = re.compile(r"cbm:idem:.+")

#: Keys read (or members written) per round trip.
CHUNK: Final = 500
#: A progress line every this many keys and index members.
PROGRESS_EVERY: Final = 1000


@dataclass
class MigrationReport:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    #: Old-layout keys found by the first SCAN.
    found: int = 0
    #: Keys moved (or dropped as already moved), by kind.
    moved: Counter[str] = field(default_factory=Counter)
    #: Index members moved into their shard's index.
    members: int = 0
    #: Keys or members dropped, by why.
    dropped: Counter[str] = field(default_factory=Counter)
    #: Keys left where they are: (key, why, ms to live or -1).
    left: list[tuple[str, str, int]] = field(default_factory=list)
    #: Index members left in an old index, by index.
    left_members: Counter[str] = field(default_factory=Counter)
    #: The old revocation counter every shard's now starts from (0: none).
    consent_seq: int = 0
    #: Old indexes /readyz looks for still in Redis after the run.
    blocking: list[str] = field(default_factory=list)


class KeyMigration:
    """One run over a standalone Redis.

    ``shard_of`` and ``digests_of`` are ``NumberKeys.shard`` and ``NumberKeys.all`` (the
    store sits below the rules that hash numbers); ``progress`` takes a line for people.
    """

    def __init__(self, client: redis.Redis, shard_of: Callable[[str], str],
                 digests_of: Callable[[str], tuple[str, ...]], *, dry_run: bool,
                 progress: Callable[[str], None], every: int = PROGRESS_EVERY) -> None:
        self._r = client
        self._shard_of = shard_of
        self._digests_of = digests_of
        self._progress = progress
        self._every = every
        self._done = 0
        self.report = MigrationReport(dry_run)
        # Learnt: the shard of each old digest, callback id, outbox token, watched token.
        self._digest_shard: dict[str, str] = {}
        self._record_shard: dict[str, str] = {}
        self._token_shard: dict[str, str] = {}
        self._orphan_shard: dict[str, str] = {}
        # Found by the SCAN.
        self._numbers: dict[str, dict[str, str]] = {}
        self._records: list[str] = []
        self._locks: list[str] = []
        self._consents: list[str] = []
        self._entries: list[str] = []
        self._owned: dict[str, str] = {}
        self._singles: set[str] = set()
        self._new_consents: list[str] = []
        self._new_orphan_infos: list[str] = []
        self._idempotency: list[str] = []
        # Records and entries that exist but whose number is not known.
        self._unplaced: set[str] = set()
        self._unplaced_tokens: set[str] = set()

    def run(self) -> MigrationReport:
        """Find, learn, move; the report says what happened."""
        self._scan()
        self._learn()
        # The counters first: a revocation the service stores between two runs (or while a
        # number's state is still to move) must outnumber every one stored before.
        self._move_consent_seq()
        for digest, found in sorted(self._numbers.items()):
            self._move_number(digest, found)
        for callback_id in self._records:
            self._move_record(callback_id)
        for consent_id in self._consents:
            self._move_consent(consent_id)
        for token in self._entries:
            self._move_entry(token)
        for callback_id in self._locks:
            self._move_lock(callback_id)
        self._move_indexes()
        for cursor in OLD_CURSORS:
            if cursor in self._singles and self._apply([cursor], _delete(cursor)):
                self.report.dropped["cursor of a walk (the shards' walks start afresh)"] += 1
                self._tick()
        if not self.report.dry_run:
            there = [bool(self._r.exists(name)) for name in BLOCKING]
            self.report.blocking = [n for n, t in zip(BLOCKING, there, strict=True) if t]
        self._progress(f"migrate-keys: done, {self._done} key(s) and member(s) handled")
        return self.report

    # -- finding and learning ------------------------------------------------------------

    def _scan(self) -> None:
        singles = {*OLD_CALLBACK_ZSETS, *OLD_CALLBACK_SETS, *OLD_TOKEN_ZSETS, OLD_ORPHAN_WATCH,
                   OLD_ORPHAN_INFO, OLD_CONSENT_SEQ, *OLD_CURSORS}
        seen = 0
        for key in cast(Iterable[str], self._r.scan_iter(match=f"{P}*", count=1000)):
            seen += 1
            if seen % (self._every * 10) == 0:
                self._progress(f"migrate-keys: scanned {seen} key(s)")
            if self._classify(key, singles):
                self.report.found += 1
        self._progress(f"migrate-keys: scanned {seen} key(s), {self.report.found} of the "
                       "layout before shards")

    def _classify(self, key: str, singles: set[str]) -> bool:
        """Note an old-layout key (true), or a new one the learning reads."""
        if key in singles:
            self._singles.add(key)
            return True
        if m := _OLD_NUMBER.fullmatch(key):
            self._numbers.setdefault(m[1], {})[m[2]] = key
            return True
        for pattern, found in ((_OLD_RECORD, self._records), (_OLD_LOCK, self._locks),
                               (_OLD_CONSENT, self._consents), (_OLD_ENTRY, self._entries)):
            if m := pattern.fullmatch(key):
                found.append(m[1])
                return True
        if m := _OLD_OWNED.fullmatch(key):
            self._owned[m[1]] = key
            return True
        if m := _NEW_ITEM.fullmatch(key):
            shard, kind, ident = m[1], m[2], m[3]
            if kind == "cb":
                self._record_shard[ident] = shard
            elif kind == "outbox":
                self._token_shard[ident] = shard
            else:
                self._new_consents.append(key)
        elif _NEW_ORPHAN_INFO.fullmatch(key):
            self._new_orphan_infos.append(key)
        elif _IDEMPOTENCY.fullmatch(key):
            self._idempotency.append(key)
        return False

    def _number(self, e164: str, digests: Iterable[str] = ()) -> str:
        """Learn a number: its shard, for the digests given and for those of PII_KEYS."""
        shard = self._shard_of(e164)
        for digest in digests:
            if digest:
                self._digest_shard[digest] = shard
        for digest in self._digests_of(e164):
            self._digest_shard[digest[1:]] = shard
        return shard

    def _rows(self, names: list[str], read: Callable[[Any, str], None]) -> list[Any]:
        """One pipelined ``read`` per key, a chunk at a time."""
        rows: list[Any] = []
        for start in range(0, len(names), CHUNK):
            pipe = self._r.pipeline(transaction=False)
            for name in names[start:start + CHUNK]:
                read(pipe, name)
            rows += pipe.execute()
        return rows

    def _learn(self) -> None:
        unresolved: dict[str, list[str]] = {}
        rows = self._rows([f"{P}cb:{i}" for i in self._records],
                          lambda p, k: p.hmget(k, "e", "ns", "n"))
        for callback_id, (e164, ns, first) in zip(self._records, rows, strict=True):
            digests = [d for d in [*(ns or "").split(","), first or ""] if d]
            if e164:
                self._record_shard[callback_id] = self._number(e164, digests)
            else:
                unresolved[callback_id] = digests
        rows = self._rows([f"{P}consent:{i}" for i in self._consents],
                          lambda p, k: p.hmget(k, "e", "n", "number", "numberKey"))
        for e164, digest, long_e164, long_digest in rows:
            if e164 or long_e164:
                self._number(e164 or long_e164, [digest or long_digest or ""])
        rows = self._rows([f"{P}outbox:{t}" for t in self._entries],
                          lambda p, k: p.hget(k, "payload"))
        for token, raw in zip(self._entries, rows, strict=True):
            payload = _json(raw)
            if payload.get("e164"):
                shard = self._number(str(payload["e164"]))
                self._token_shard[token] = shard
                unresolved.pop(str(payload.get("ledgerId", "")), None)
                self._record_shard.setdefault(str(payload.get("ledgerId", "")), shard)
            elif raw is not None:
                self._unplaced_tokens.add(token)
        if OLD_ORPHAN_INFO in self._singles:
            for token, raw in cast(dict[str, str], self._r.hgetall(OLD_ORPHAN_INFO)).items():
                if e164 := str(_json(raw).get("e") or ""):
                    self._orphan_shard[token] = self._number(e164)
        for key in self._new_orphan_infos:
            shard = key[len(P) + 2]
            for token in cast(list[str], self._r.hkeys(key)):
                self._orphan_shard.setdefault(token, shard)
        # A consent or record moved by an interrupted run still names its old digest.
        rows = self._rows(self._new_consents, lambda p, k: p.hget(k, "n"))
        for key, digest in zip(self._new_consents, rows, strict=True):
            if digest:
                self._digest_shard.setdefault(digest[1:], key[len(P) + 2])
        self._learn_from_streams()
        if any(d not in self._digest_shard for d in self._numbers) or unresolved:
            self._learn_from_answers()
        for callback_id, digests in unresolved.items():
            known = [self._digest_shard[d] for d in digests if d in self._digest_shard]
            if known:
                self._record_shard[callback_id] = known[0]
            else:
                self._unplaced.add(callback_id)

    def _learn_from_streams(self) -> None:
        """The evidence stream's consent events carry a copy of their record."""
        streams = [found["history"] for found in self._numbers.values() if "history" in found]
        for entries in self._rows(streams, lambda p, k: p.xrange(k)):
            for _, event in entries:
                if event.get("number"):
                    self._number(event["number"], [event.get("numberKey", "")])

    def _learn_from_answers(self) -> None:
        """Answers kept for idempotency keys name the number they were about."""
        for raw in self._rows(self._idempotency, lambda p, k: p.hget(k, "b")):
            answer = _json(raw)
            if isinstance(answer.get("customerNumberE164"), str) and answer["customerNumberE164"]:
                self._number(answer["customerNumberE164"])

    # -- moving one key ------------------------------------------------------------------

    def _apply(self, watched: list[str], plan: Plan) -> bool:
        """Run a move in one transaction watching ``watched`` (a dry run only plans it);
        false when there was nothing to move."""
        if self.report.dry_run:
            return plan(self._r) is not None
        done = [False]

        def step(pipe: Any) -> None:
            ops = plan(pipe)
            pipe.multi()
            done[0] = ops is not None
            for name, args in ops or ():
                pipe.execute_command(name, *args)

        self._r.transaction(step, *watched)
        return done[0]

    def _tick(self, count: int = 1) -> None:
        before = self._done // self._every
        self._done += count
        if self._done // self._every > before:
            r = self.report
            verb = "would move" if r.dry_run else "moved"
            self._progress(f"migrate-keys: {self._done} key(s) and member(s) handled: "
                           f"{verb} {sum(r.moved.values())} key(s) and {r.members} member(s), "
                           f"left {len(r.left)} key(s)")

    def _leave(self, key: str, why: str) -> None:
        self.report.left.append((key, why, int(self._r.pttl(key))))
        self._tick()

    def _move_number(self, digest: str, found: dict[str, str]) -> None:
        shard = self._digest_shard.get(digest)
        if shard is None:
            for key in found.values():
                self._leave(key, "its number is known from no record")
            return
        new = shard + digest
        targets = {"claim": keys.claim(new), "pending": keys.pending(new),
                   "created": keys.created(new), "consent": keys.consent_state(new)}
        for kind in ("claim", "pending", "created", "consent"):
            if kind in found:
                old, target = found[kind], targets[kind]
                plan = {"claim": _move_string, "consent": _merge_state}.get(kind, _merge_zset)
                if self._apply([old, target], plan(old, target)):
                    self.report.moved[f"number {kind}"] += 1
                self._tick()
        olds = [found[k] for k in ("history", "ev") if k in found]
        if olds:
            if self._apply([*olds, keys.events(new)], _merge_events(
                    found.get("history"), found.get("ev"), keys.events(new))):
                self.report.moved["number evidence"] += len(olds)
            self._tick(len(olds))

    def _move_record(self, callback_id: str) -> None:
        old = f"{P}cb:{callback_id}"
        shard = self._record_shard.get(callback_id)
        if shard is None or callback_id in self._unplaced:
            self._leave(old, "its number is known from no record")
            return
        if self._apply([old, keys.record(shard, callback_id)],
                       _move_hash(old, keys.record(shard, callback_id), _record_fields(shard))):
            self.report.moved["callback record"] += 1
        self._tick()

    def _move_consent(self, consent_id: str) -> None:
        old = f"{P}consent:{consent_id}"
        e164, long_e164 = cast(list[str | None], self._r.hmget(old, "e", "number"))
        if not (e164 or long_e164):
            self._leave(old, "it names no number")
            return
        shard = self._shard_of(str(e164 or long_e164))
        target = keys.consent(shard, consent_id)
        if self._apply([old, target], _move_hash(old, target, _consent_fields(shard))):
            self.report.moved["consent record"] += 1
        self._tick()

    def _move_entry(self, token: str) -> None:
        old = f"{P}outbox:{token}"
        shard = self._token_shard.get(token)
        if shard is None:
            self._leave(old, "its payload names no number")
            return
        if self._apply([old, keys.outbox_entry(shard, token)],
                       _move_hash(old, keys.outbox_entry(shard, token), dict)):
            self.report.moved["outbox entry"] += 1
        self._tick()

    def _move_lock(self, callback_id: str) -> None:
        old = f"{P}cb:{callback_id}:lock"
        if self._apply([old, keys.change_lock(callback_id)],
                       _move_string(old, keys.change_lock(callback_id))):
            self.report.moved["change lock"] += 1
        self._tick()

    # -- moving the indexes, member by member -------------------------------------------

    def _move_indexes(self) -> None:
        for index in OLD_CALLBACK_ZSETS + OLD_CALLBACK_SETS:
            if index in self._singles:
                self._split(_Index(index, functools.partial(_in_shard, index[len(P):]),
                                   self._callback_place, index in OLD_CALLBACK_ZSETS))
        for agent, index in sorted(self._owned.items()):
            self._split(_Index(index, functools.partial(_owned, agent), self._callback_place,
                               True))
        for index, target in zip(OLD_TOKEN_ZSETS, (keys.outbox, keys.dead), strict=True):
            if index in self._singles:
                self._split(_Index(index, target, self._token_place, True))
        if OLD_ORPHAN_WATCH in self._singles:
            self._split(_Index(OLD_ORPHAN_WATCH, keys.orphan_watch, self._orphan_shard.get,
                               True))
        if OLD_ORPHAN_INFO in self._singles:
            self._split(_Index(OLD_ORPHAN_INFO, keys.orphan_info, self._orphan_shard.get,
                               False, hashed=True))

    def _callback_place(self, callback_id: str) -> str | None:
        """A callback's shard; ``None`` when its record is gone, ``"?"`` when its number
        is not known."""
        return "?" if callback_id in self._unplaced else self._record_shard.get(callback_id)

    def _token_place(self, token: str) -> str | None:
        """An outbox token's shard, as ``_callback_place`` gives a callback's."""
        return "?" if token in self._unplaced_tokens else self._token_shard.get(token)

    def _split(self, index: _Index) -> None:
        """Move each member of an old index into its shard's index (same score, a member
        already there kept), drop those whose record or entry is gone, leave the rest."""
        if index.hashed:
            members = sorted(cast(dict[str, str], self._r.hgetall(index.name)))
        elif index.zset:
            members = [m for m, _ in cast(list[tuple[str, float]], self._r.zrange(
                index.name, 0, -1, withscores=True))]
        else:
            members = sorted(cast(set[str], self._r.smembers(index.name)))
        pttl = int(self._r.pttl(index.name))
        for start in range(0, len(members), CHUNK):
            chunk = members[start:start + CHUNK]
            tally: Counter[str] = Counter()
            self._apply([index.name], functools.partial(_split_chunk, index, chunk, pttl,
                                                        tally))
            self.report.members += tally["moved"]
            if tally["gone"]:
                self.report.dropped["index member whose record or entry is gone"] += \
                    tally["gone"]
            if tally["left"]:
                self.report.left_members[index.name] += tally["left"]
            self._tick(len(chunk))

    def _move_consent_seq(self) -> None:
        if OLD_CONSENT_SEQ not in self._singles:
            return
        counters = [keys.consent_seq(s) for s in keys.SHARDS]

        def plan(r: Any) -> list[Op] | None:
            old = r.get(OLD_CONSENT_SEQ)
            if old is None:
                return None
            self.report.consent_seq = int(old)
            # A revocation stored from now on must outnumber every one stored before, in
            # whichever shard its number is: each counter starts at least where the one
            # counter stopped.
            now = cast(list[str | None], r.mget(counters))
            ops: list[Op] = [("SET", (c, int(old))) for c, v in zip(counters, now, strict=True)
                             if int(v or 0) < int(old)]
            return [*ops, ("DEL", (OLD_CONSENT_SEQ,))]

        if self._apply([OLD_CONSENT_SEQ, *counters], plan):
            self.report.moved["revocation counter"] += 1
        self._tick()


@dataclass(frozen=True)
class _Index:
    """An old index to split by shard: where each member goes (``place``: its shard,
    ``None`` when what it names is gone, ``"?"`` when its number is not known)."""

    name: str
    target: Callable[[str], str]
    place: Callable[[str], str | None]
    zset: bool
    #: A hash (the orphan watch's info) rather than a set.
    hashed: bool = False


def _in_shard(name: str, shard: str) -> str:
    return f"{P}{{s{shard}}}:{name}"


def _owned(agent_id: str, shard: str) -> str:
    return keys.owned(shard, agent_id)


def _split_chunk(index: _Index, chunk: list[str], pttl: int, tally: Counter[str], r: Any
                 ) -> list[Op] | None:
    """The move of a chunk of an index's members, read again under the watch."""
    tally.clear()
    if index.hashed:
        now: list[Any] = cast(list[str | None], r.hmget(index.name, chunk))
    elif index.zset:
        now = cast(list[float | None], r.zmscore(index.name, chunk))
    else:
        now = [True if there else None
               for there in cast(list[int], r.smismember(index.name, chunk))]
    by_shard: dict[str, list[Any]] = {}
    gone: list[str] = []
    for member, value in zip(chunk, now, strict=True):
        if value is None:
            continue
        where = index.place(member)
        if where == "?":
            tally["left"] += 1
            continue
        gone.append(member)
        if where is None:
            tally["gone"] += 1
            continue
        tally["moved"] += 1
        by_shard.setdefault(where, []).extend(
            (member, value) if index.hashed else (_score(value), member) if index.zset
            else (member,))
    ops: list[Op] = []
    for shard, items in sorted(by_shard.items()):
        key = index.target(shard)
        if index.hashed:
            ops += [("HSETNX", (key, *items[i:i + 2])) for i in range(0, len(items), 2)]
        elif index.zset:
            # The orphan watch only ever extends a watch (see OrphanStore.watch_orphan).
            flag = "GT" if index.name == OLD_ORPHAN_WATCH else "NX"
            ops.append(("ZADD", (key, flag, *items)))
        else:
            ops.append(("SADD", (key, *items)))
        ops += _keep_ttl(key, pttl, int(r.pttl(key)))
    if gone:
        verb = "HDEL" if index.hashed else "ZREM" if index.zset else "SREM"
        ops.append((verb, (index.name, *gone)))
    return ops


# -- the plans of one key's move -----------------------------------------------------------


def _json(raw: str | None) -> dict[str, Any]:
    try:
        found = json.loads(raw or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _event_ms(raw: str) -> int:
    try:
        return int(_json(raw).get("t") or 0)
    except (TypeError, ValueError):
        return 0


def _score(score: float) -> int | float:
    return int(score) if score == int(score) else score


def _keep_ttl(key: str, old_ms: int, new_ms: int) -> list[Op]:
    """The old key's time to live on its copy (``old_ms``: its PTTL; ``new_ms``: the copy's
    before the move, -2 when absent): a copy that lived longer keeps its own."""
    if old_ms > 0 and (new_ms == -2 or 0 < new_ms < old_ms):
        return [("PEXPIRE", (key, old_ms))]
    return []


def _delete(key: str) -> Plan:
    def plan(r: Any) -> list[Op] | None:
        return [("DEL", (key,))] if r.exists(key) else None
    return plan


def _move_string(old: str, new: str) -> Plan:
    """A claim or lock: a copy already there is the newer one and stays."""
    def plan(r: Any) -> list[Op] | None:
        value, pttl = r.get(old), int(r.pttl(old))
        if value is None:
            return None
        if r.exists(new):
            return [("DEL", (old,))]
        return [("SET", (new, value, "PX", pttl) if pttl > 0 else (new, value)),
                ("DEL", (old,))]
    return plan


def _merge_zset(old: str, new: str) -> Plan:
    def plan(r: Any) -> list[Op] | None:
        items = cast(list[tuple[str, float]], r.zrange(old, 0, -1, withscores=True))
        if not items:
            return None
        pttl, new_pttl = int(r.pttl(old)), int(r.pttl(new))
        ops: list[Op] = [("ZADD", (new, "NX", *(x for m, s in items[i:i + CHUNK]
                                               for x in (_score(s), m))))
                         for i in range(0, len(items), CHUNK)]
        return [*ops, *_keep_ttl(new, pttl, new_pttl), ("DEL", (old,))]
    return plan


def _merge_state(old: str, new: str) -> Plan:
    """A number's revocation state: of each of its latest revocation and lifting consent,
    the one stored later (the larger store order) is kept."""
    def plan(r: Any) -> list[Op] | None:
        was = cast(dict[str, str], r.hgetall(old))
        if not was:
            return None
        there = cast(dict[str, str], r.hgetall(new))
        merged = {**was, **there}
        for kind in ("revoked", "lifted"):
            seq = f"{kind}Seq"
            if int(was.get(seq) or 0) > int(there.get(seq) or 0):
                merged[seq] = was[seq]
                merged[f"{kind}Ms"] = was.get(f"{kind}Ms", "")
        pairs = [x for item in sorted(merged.items()) for x in item]
        return [("HSET", (new, *pairs)), *_keep_ttl(new, int(r.pttl(old)), int(r.pttl(new))),
                ("DEL", (old,))]
    return plan


def _merge_events(stream: str | None, listed: str | None, new: str) -> Plan:
    """A number's evidence: the stream written before lists (each entry as it was stored,
    which ``evidence.expand_events`` reads as the long form it is), then the old list and
    anything already in the new one; oldest first, as the product appends."""
    def plan(r: Any) -> list[Op] | None:
        streamed: list[str] = []
        listed_events: list[str] = []
        ttls: list[int] = []
        if stream is not None and r.exists(stream):
            streamed = [event_json(e) for _, e in cast(list[tuple[str, dict[str, str]]],
                                                        r.xrange(stream))]
            ttls.append(int(r.pttl(stream)))
        if listed is not None and r.exists(listed):
            listed_events = cast(list[str], r.lrange(listed, 0, -1))
            ttls.append(int(r.pttl(listed)))
        if not ttls:
            return None
        there = cast(list[str], r.lrange(new, 0, -1))
        if there:
            ttls.append(int(r.pttl(new)))
        # Lists merge by their times, as the evidence reader orders them; the stream's
        # events, which have none, stay first.
        events = streamed + sorted(listed_events + there, key=_event_ms)
        ops: list[Op] = [("DEL", (new,))] if there else []
        ops += [("RPUSH", (new, *events[i:i + CHUNK])) for i in range(0, len(events), CHUNK)]
        # Written afresh: the longest-lived of the lists it joins sets its expiry.
        if -1 not in ttls:
            ops.append(("PEXPIRE", (new, max(ttls))))
        return [*ops, *(("DEL", (k,)) for k in (stream, listed) if k is not None)]
    return plan


def _move_hash(old: str, new: str, rewrite: Callable[[dict[str, str]], dict[str, str]]
               ) -> Plan:
    """A record, consent or outbox entry: a copy already there is kept as it is."""
    def plan(r: Any) -> list[Op] | None:
        fields = cast(dict[str, str], r.hgetall(old))
        if not fields:
            return None
        if r.exists(new):
            return [("DEL", (old,))]
        pairs = [x for item in rewrite(fields).items() for x in item]
        return [("HSET", (new, *pairs)), *_keep_ttl(new, int(r.pttl(old)), -2),
                ("DEL", (old,))]
    return plan


def _new_digests(shard: str, listed: str) -> str:
    return ",".join(shard + d for d in listed.split(",") if d)


def _record_fields(shard: str) -> Callable[[dict[str, str]], dict[str, str]]:
    """A ledger record's digests (``ns``, and ``n`` on records written before ``ns`` led)
    under the new layout: every digest of a number starts with its shard."""
    def rewrite(fields: dict[str, str]) -> dict[str, str]:
        return {**fields, **{name: _new_digests(shard, fields[name])
                             for name in ("ns", "n") if fields.get(name)}}
    return rewrite


def _consent_fields(shard: str) -> Callable[[dict[str, str]], dict[str, str]]:
    """A consent record's digest: ``n``, or ``numberKey`` on records written before the
    short names."""
    def rewrite(fields: dict[str, str]) -> dict[str, str]:
        return {**fields, **{name: shard + fields[name]
                             for name in ("n", "numberKey") if fields.get(name)}}
    return rewrite


def render_report(report: MigrationReport) -> str:
    """The summary for people: what moved, what was dropped and why, what is left."""
    verb = "would move" if report.dry_run else "moved"
    lines = [f"{report.found} key(s) of the layout before shards found"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.moved.items()))
    lines.append(f"{verb}: {sum(report.moved.values())} key(s)" + (f" ({kinds})" if kinds
                                                                     else ""))
    lines.append(f"{verb}: {report.members} index member(s) into their shards' indexes")
    if report.consent_seq:
        lines.append(f"every shard's revocation counter starts at {report.consent_seq} or "
                     "more")
    for why, n in sorted(report.dropped.items()):
        lines.append(f"{'would drop' if report.dry_run else 'dropped'}: {n} {why}")
    if report.left:
        longest = max(ms for _, _, ms in report.left)
        lasts = "some have no expiry" if any(ms == -1 for _, _, ms in report.left) else \
            f"all expire within {max(longest, 0) // 1000 + 1} s"
        lines.append(f"left: {len(report.left)} key(s) ({lasts}):")
        by_why = Counter(why for _, why, _ in report.left)
        for why, n in sorted(by_why.items()):
            lines.append(f"  {n} because {why}")
        for key, _, ms in report.left[:20]:
            lines.append(f"  {key}  ({'no expiry' if ms == -1 else f'{ms // 1000} s to live'})")
        if len(report.left) > 20:
            lines.append(f"  ... and {len(report.left) - 20} more")
    for index, n in sorted(report.left_members.items()):
        lines.append(f"left: {n} member(s) of {index} whose number is not known")
    if report.blocking:
        lines.append(f"still there: {', '.join(report.blocking)}: /readyz stays not ready "
                     "until they are gone")
    elif not report.dry_run:
        lines.append("no index of the layout before shards is left: /readyz can be ready")
    return "\n".join(lines)


def migrate_keys(conn: Connection, shard_of: Callable[[str], str],
                 digests_of: Callable[[str], tuple[str, ...]], *, dry_run: bool,
                 progress: Callable[[str], None], every: int = PROGRESS_EVERY
                 ) -> MigrationReport | None:
    """Move every key of the layout before shards (``None``: Redis is a cluster, where
    releases before shards never ran, so there is nothing to move)."""
    client = conn.client()
    if not isinstance(client, redis.Redis):
        return None
    return KeyMigration(client, shard_of, digests_of, dry_run=dry_run, progress=progress,
                        every=every).run()
