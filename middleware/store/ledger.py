"""The callback ledger in Redis: records, their indexes and evidence history, changed only by
the transitions of ``ledger.lifecycle``, which alone calls the writing methods here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol, cast

from middleware.store import keys
from middleware.store.client import StoreBase, event_json
from middleware.store.packed import with_layer

# Record a created (or queued) callback in the ledger, its window under every digest, the
# walk and the history, then drop our claim. KEYS: record, the shard's walk, history, then
# per digest: claim, number's pending set. ARGV: token, callback id, scheduled ms, ttl s,
# history ttl s, the history event (JSON; '' none), then the record's field/value pairs.
_COMMIT_CALLBACK: Final = with_layer("""
R_set(KEYS[1], unpack(ARGV, 7))
R_expire(KEYS[1], ARGV[4])
W_add(KEYS[2], ARGV[3], ARGV[2])
for i = 4, #KEYS, 2 do
  Z_add(KEYS[i + 1], ARGV[3], ARGV[2])
  Z_keep(KEYS[i + 1], ARGV[4])
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
_history(KEYS[3], ARGV[6], ARGV[5])
return 1
""")


# Take a callback out of the window for good, only while it is still pending: an end seen
# late (reconciliation reading a callback just cancelled) never rewrites the first one.
# The callback leaves the set of replaced ones awaiting a disconnect, and the event (when
# one is given) goes in the history, either way.
# KEYS: record, global set, replacing set, history, then the number's pending set per
# digest. ARGV: state, id, history ttl s, the event (JSON; '': none).
_CLOSE_CALLBACK: Final = with_layer("""
local st = R_get(KEYS[1], 'st')
W_rem(KEYS[2], ARGV[2])
for i = 5, #KEYS do Z_rem(KEYS[i], ARGV[2]) end
redis.call('SREM', KEYS[3], ARGV[2])
_history(KEYS[4], ARGV[4], ARGV[3])
if st ~= 'PENDING' and st ~= 'QUEUED' and st ~= 'CREATING' then return 0 end
R_set(KEYS[1], 'st', ARGV[1])
R_incr(KEYS[1], 'v', 1)
return 1
""")


# The journaled create exists in Genesys: in one step, if the request was not cancelled
# meanwhile, the real record takes the journal entry's place in the window and indexes, the
# history records it, and the entry and its outbox item go. Returns 0 (outbox item dropped,
# nothing else) when the entry is no longer CREATING or QUEUED.
# KEYS: journaled record, real record, real number's pending set, global pending set,
#       (unused: the owner's count moves with the record), journaled number's pending
#       set, history, outbox, outbox entry,
#       the replaced record of an owner move (else the journaled record again) and the set
#       of those awaiting their disconnect (the old callback is marked replaced in this same
#       step, never before), then the consent state under each digest (``nc`` of them),
#       then the pending set of every further digest of the number.
# ARGV: journaled id, real id, scheduled ms, ttl s, history ttl s, token, count of record
#       field/value items, those items, the history event (JSON), the replaced id, nc.
_DELIVER: Final = with_layer("""
local st = R_get(KEYS[1], 'st')
redis.call('ZREM', KEYS[8], ARGV[6])
redis.call('DEL', KEYS[9])
if st ~= 'CREATING' and st ~= 'QUEUED' then return 0 end
local nc = tonumber(ARGV[10 + tonumber(ARGV[7])])
-- A revocation stored since it was accepted, or the replacement of an owner move whose old
-- callback ended meanwhile (cancelled, revoked, completed): it ends too, and the caller
-- disconnects what Genesys just created.
local gone = KEYS[10] ~= KEYS[1] and R_get(KEYS[10], 'st') ~= 'PENDING'
local ep = tonumber(R_get(KEYS[1], 'ep') or '-1')
for i = 12, 11 + nc do
  local seq = tonumber(redis.call('HGET', KEYS[i], 'revokedSeq') or '0')
  if ep >= 0 and seq > ep then gone = true end
end
if gone then
  R_set(KEYS[1], 'st', 'CANCELLED')
  R_incr(KEYS[1], 'v', 1)
  W_rem(KEYS[4], ARGV[1])
  Z_rem(KEYS[6], ARGV[1])
  for i = 12 + nc, #KEYS do Z_rem(KEYS[i], ARGV[1]) end
  return 0
end
local n = tonumber(ARGV[7])
R_set(KEYS[2], unpack(ARGV, 8, 7 + n))
R_expire(KEYS[2], ARGV[4])
Z_rem(KEYS[6], ARGV[1])
Z_add(KEYS[3], ARGV[3], ARGV[2])
Z_keep(KEYS[3], ARGV[4])
W_add(KEYS[4], ARGV[3], ARGV[2])
for i = 12 + nc, #KEYS do
  Z_rem(KEYS[i], ARGV[1])
  Z_add(KEYS[i], ARGV[3], ARGV[2])
  Z_keep(KEYS[i], ARGV[4])
end
W_rem(KEYS[4], ARGV[1])
R_delete(KEYS[1])
_history(KEYS[7], ARGV[8 + n], ARGV[5])
if KEYS[10] ~= KEYS[1] and R_exists(KEYS[10]) == 1 then
  R_set(KEYS[10], 'r', ARGV[2])
  R_incr(KEYS[10], 'v', 1)
  if R_get(KEYS[10], 'st') == 'PENDING' then
    redis.call('SADD', KEYS[11], ARGV[9 + n])
  end
end
return 1
""")


# Link (ARGV[2] set) or unlink (ARGV[2] empty) a callback to a replacement still being
# created, only while the link is what the caller read (ARGV[1]) and, when ARGV[4] is not
# -1, the record's version too (a reschedule committed since would be lost otherwise); an
# unlinked callback is no longer awaiting a disconnect.
# KEYS: record, the set of replaced callbacks awaiting one.
_RELINK: Final = with_layer("""
if R_exists(KEYS[1]) == 0 then return 0 end
if (R_get(KEYS[1], 'r') or '') ~= ARGV[1] then return 0 end
local v = tonumber(R_get(KEYS[1], 'v') or '0')
if tonumber(ARGV[4]) >= 0 and v ~= tonumber(ARGV[4]) then return 0 end
R_set(KEYS[1], 'r', ARGV[2])
R_incr(KEYS[1], 'v', 1)
if ARGV[2] == '' then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
""")


# A journaled create Genesys could not take now becomes QUEUED with its next attempt, in
# one step, only while it is still CREATING or QUEUED: 0, nothing written, when it was
# cancelled meanwhile (the worker then finds the outbox entry unwanted and drops it).
# KEYS: record, outbox entry, outbox, history. ARGV: token, payload, next ms, history ttl s,
# the history event (JSON).
_DEFER: Final = with_layer("""
local st = R_get(KEYS[1], 'st')
if st ~= 'CREATING' and st ~= 'QUEUED' then return 0 end
R_set(KEYS[1], 'st', 'QUEUED')
R_incr(KEYS[1], 'v', 1)
redis.call('HSET', KEYS[2], 'payload', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
_history(KEYS[4], ARGV[5], ARGV[4])
return 1
""")


# The outbox gives up on a create, in one step: the entry becomes a dead letter (kept for a
# replay) and its record leaves the window as DEAD_LETTER; an owner move it was unlinks
# from the callback it was to replace, which stays the customer's. Only while the entry
# exists and the record is still CREATING or QUEUED (or gone): one cancelled meanwhile is
# dropped, never kept for a replay that would bring it back. The record keeps its lifetime:
# past CONSENT_MAX_AGE_HOURS, far sooner, a replay is refused on its consent anyway.
# KEYS: outbox, entry, dead letters, record, global pending, (unused), history,
#       replaced record (else the record again), replacing set, then the number's pending
#       set per digest.
# ARGV: token, attempts, error, at ms, record id, history ttl s, the event (JSON), the
#       replaced record's id.
_DEAD_LETTER: Final = with_layer("""
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local st = R_get(KEYS[4], 'st')
redis.call('ZREM', KEYS[1], ARGV[1])
if st and st ~= 'CREATING' and st ~= 'QUEUED' then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('HSET', KEYS[2], 'attempts', ARGV[2], 'error', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if not st then return 1 end
R_set(KEYS[4], 'st', 'DEAD_LETTER')
R_incr(KEYS[4], 'v', 1)
W_rem(KEYS[5], ARGV[5])
for i = 10, #KEYS do Z_rem(KEYS[i], ARGV[5]) end
_history(KEYS[7], ARGV[7], ARGV[6])
if KEYS[8] ~= KEYS[4] and R_get(KEYS[8], 'r') == ARGV[5] then
  R_set(KEYS[8], 'r', '')
  R_incr(KEYS[8], 'v', 1)
  redis.call('SREM', KEYS[9], ARGV[8])
end
return 1
""")


# A callback's new time, only while the record is the version the caller read and no
# replacement is linked (a move in flight would create it at the old time): record,
# indexes, lifetimes (a later time must not let the record or the window expire early) and
# the history event. KEYS: record, number's pending set, global pending set, (unused),
# history, then the number's pending set per further digest.
# ARGV: version read, id, scheduled ms, ttl s, history ttl s, the event (JSON).
_MOVE: Final = with_layer("""
if R_exists(KEYS[1]) == 0 then return 0 end
if tonumber(R_get(KEYS[1], 'v') or '0') ~= tonumber(ARGV[1]) then return 0 end
if (R_get(KEYS[1], 'r') or '') ~= '' then return 0 end
R_set(KEYS[1], 's', ARGV[3])
R_del(KEYS[1], 'rx')
R_incr(KEYS[1], 'v', 1)
R_expire(KEYS[1], ARGV[4])
for i = 2, #KEYS do
  if i == 3 then
    if W_score(KEYS[i], ARGV[2]) then W_add(KEYS[i], ARGV[3], ARGV[2]) end
  elseif i ~= 4 and i ~= 5 and Z_score(KEYS[i], ARGV[2]) then
    Z_add(KEYS[i], ARGV[3], ARGV[2])
    Z_keep(KEYS[i], ARGV[4])
  end
end
_history(KEYS[5], ARGV[6], ARGV[5])
return 1
""")



# The journal: one guarded step. KEYS: record, global pending, (unused), outbox,
# outbox entry, history, then per digest: claim, pending, created, consent state.
# ARGV: token, id, scheduled ms, ttl s, revocation epoch read (-1: unguarded; -2: read it
# here, READ_IN_STEP), counts,
# created ms, payload, first attempt ms, claimed, history ttl s, n, n field/value items,
# then the history event (JSON; none: no event).
# The claim may be missing only when Redis applied an earlier try whose reply was lost
# (the record then exists with our token): that try already did everything.
_JOURNAL: Final = with_layer("""
local nd = (#KEYS - 6) / 4
if R_get(KEYS[1], 't') == ARGV[1] then return 'OK' end
-- 'W:<window end ms>:<forget before ms>:<now ms>:<daily cap>': no claim was taken, so this
-- step is the claim: the window check of the claim script, then the journal, in one step.
-- Anything in the way answers LIMIT, DUPLICATE:<the pending id found> or BUSY, and nothing
-- is written.
local w_end, forget, now, cap = string.match(ARGV[10], '^W:(%d+):(%-?%d+):(%d+):(%d+)$')
-- The claim's checks come in the order of SPEC §4: the daily cap, the revocation (when no
-- consent check read it before: READ_IN_STEP), then the window and the claim.
if w_end then
  local seen, count = {}, 0
  for i = 0, nd - 1 do
    local created = KEYS[9 + 4 * i]
    redis.call('ZREMRANGEBYSCORE', created, '-inf', tonumber(now) - 86400000)
    for _, token in ipairs(redis.call('ZRANGE', created, 0, -1)) do
      if not seen[token] then seen[token] = true; count = count + 1 end
    end
  end
  if count >= tonumber(cap) then return 'LIMIT' end
end
local ep = tonumber(ARGV[5])
if ep == -2 then
  -- No consent check read the state before (a create that gave its own consent): the
  -- rule's revocation check is made here, as it makes it (revoked while the latest
  -- revocation under any digest outnumbers the latest lifting consent), and the epoch the
  -- delivery re-checks is the latest revocation.
  local revoked, lifted = 0, 0
  for i = 0, nd - 1 do
    local state = redis.call('HMGET', KEYS[10 + 4 * i], 'revokedSeq', 'liftedSeq')
    revoked = math.max(revoked, tonumber(state[1] or '0'))
    lifted = math.max(lifted, tonumber(state[2] or '0'))
  end
  if revoked > lifted then return 'REVOKED' end
  ep = revoked
end
if w_end then
  for i = 0, nd - 1 do
    local base = 7 + 4 * i
    Z_trim(KEYS[base + 1], forget)
    local found = Z_upto(KEYS[base + 1], w_end, 1)
    if #found > 0 then return 'DUPLICATE:' .. found[1][1] end
    local held = redis.call('GET', KEYS[base])
    if held and held ~= ARGV[1] then return 'BUSY' end
  end
end
for i = 0, nd - 1 do
  local base = 7 + 4 * i
  if ep >= 0 then
    local seq = tonumber(redis.call('HGET', KEYS[base + 3], 'revokedSeq') or '0')
    if seq > ep then return 'REVOKED' end
  end
  if ARGV[10] == '1' then
    local held = redis.call('GET', KEYS[base])
    if held and held ~= ARGV[1] then return 'LOST' end
  end
end
local n = tonumber(ARGV[12])
R_set(KEYS[1], unpack(ARGV, 13, 12 + n))
-- The revocation epoch it was accepted under: its delivery re-checks it.
if ep >= 0 then R_set(KEYS[1], 'ep', ep) end
R_incr(KEYS[1], 'v', 1)
R_expire(KEYS[1], ARGV[4])
W_add(KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[5], 'payload', ARGV[8], 'attempts', 0, 'error', '')
redis.call('ZADD', KEYS[4], ARGV[9], ARGV[1])
for i = 0, nd - 1 do
  local base = 7 + 4 * i
  Z_add(KEYS[base + 1], ARGV[3], ARGV[2])
  Z_keep(KEYS[base + 1], ARGV[4])
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[base + 2], ARGV[7], ARGV[1])
    redis.call('PEXPIRE', KEYS[base + 2], """ + str(keys.CREATED_KEEP_MS) + """)
  end
  if redis.call('GET', KEYS[base]) == ARGV[1] then redis.call('DEL', KEYS[base]) end
end
_history(KEYS[6], ARGV[13 + n], ARGV[11])
return 'OK'
""")


# A pending callback is cancelled here but Genesys did not take its disconnect: CANCELLED at
# once (no action finds it pending any more), marked for the worker's retried disconnect, and
# kept in the number's pending sets, so the window stays blocked until Genesys lets it go.
# With field/value items in ARGV (a create that landed after its cancel and could not be
# undone), the record is written first. KEYS: record, global pending, (unused), the
# set of disconnects to finish, history, then the number's pending set per digest.
# ARGV: id, scheduled ms, ttl s, history ttl s, count of record items, those items, then the
# history event (compact JSON).
_DISCONNECT_LATER: Final = with_layer("""
local n = tonumber(ARGV[5])
if n > 0 then
  R_set(KEYS[1], unpack(ARGV, 6, 5 + n))
  R_expire(KEYS[1], ARGV[3])
  for i = 6, #KEYS do
    Z_add(KEYS[i], ARGV[2], ARGV[1])
    Z_keep(KEYS[i], ARGV[3])
  end
elseif R_get(KEYS[1], 'st') ~= 'PENDING' then
  return 0
end
R_set(KEYS[1], 'st', 'CANCELLED', 'dx', '1', 'cx', '1')
R_incr(KEYS[1], 'v', 1)
W_rem(KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
_history(KEYS[5], ARGV[6 + n], ARGV[4])
return 1
""")


# Genesys let go of a callback whose disconnect was pending: the number's window is free.
# KEYS: record, the set of disconnects to finish, then the number's pending set per digest.
_DISCONNECTED: Final = with_layer("""
redis.call('SREM', KEYS[2], ARGV[1])
if R_get(KEYS[1], 'dx') then
  R_del(KEYS[1], 'dx')
  R_incr(KEYS[1], 'v', 1)
end
for i = 3, #KEYS do Z_rem(KEYS[i], ARGV[1]) end
return 1
""")


# A cancel (ARGV[1] 'cx') or a reschedule's PATCH (ARGV[1] 'rx', with the ask's ms) is
# being sent: noted on the record, never creating one (a committed reschedule clears
# ``rx``), and the worker reads the callback from ARGV[3] ms on.
# KEYS: the record, the shard's in-doubt set. ARGV: field, value, check ms, id.
_MARK_ASKED: Final = with_layer("""
if R_exists(KEYS[1]) == 1 then R_set(KEYS[1], ARGV[1], ARGV[2]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
""")

# Genesys was read and holds the ledger's time: the reschedule is no longer in doubt,
# unless another reschedule asked since (``rx`` changed). KEYS[1] the record. ARGV[1] the ms.
_CLEAR_RESCHEDULE: Final = with_layer("""
local rx = R_get(KEYS[1], 'rx')
if not rx then return 1 end
if rx == ARGV[1] then R_del(KEYS[1], 'rx'); return 1 end
return 0
""")


#: The journal's ``epoch`` for a create no consent check has read the state for (one that
#: gave its own consent): the journal checks the revocation state itself, and refuses with
#: ``REVOKED`` while the number stands revoked.
READ_IN_STEP: Final = -2


def window_check(window_end_ms: int, forget_before_ms: int, now_ms: int, daily_limit: int
                 ) -> str:
    """The journal's ``claimed`` argument that makes it check the window as a claim would."""
    return f"W:{window_end_ms}:{forget_before_ms}:{now_ms}:{daily_limit}"


class StoredRecord(Protocol):
    """What the store needs of a ledger record (``ledger.records.LedgerRecord``): the store
    sits below the ledger, so it names the shape rather than importing the class."""

    @property
    def callback_id(self) -> str: ...
    @property
    def number_key(self) -> str: ...
    @property
    def scheduled_ms(self) -> int: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def request_token(self) -> str: ...
    @property
    def replaces(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def digests(self) -> tuple[str, ...]: ...
    @property
    def shard(self) -> str: ...

    def to_fields(self) -> dict[str, str | int]: ...


LedgerRecord = StoredRecord


class LedgerStore(StoreBase):
    """Ledger records and their indexes, written in atomic steps."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_journal": _JOURNAL,
        "_deliver": _DELIVER,
        "_defer": _DEFER,
        "_dead_letter": _DEAD_LETTER,
        "_relink": _RELINK,
        "_move": _MOVE,
        "_clear_reschedule": _CLEAR_RESCHEDULE,
        "_disconnect_later": _DISCONNECT_LATER,
        "_disconnected": _DISCONNECTED,
        "_commit_callback": _COMMIT_CALLBACK,
        "_close_callback": _CLOSE_CALLBACK,
        "_mark_asked": _MARK_ASKED,
    }

    def commit_callback(self, digest: str, token: str, record: LedgerRecord, ttl_s: int,
                        event: Mapping[str, str | int], history_ttl_s: int) -> None:
        """Put a created or queued callback in the ledger, the window (under every digest)
        and the number's evidence history, in one step; release the claim."""
        fields = [item for pair in record.to_fields().items() for item in pair]
        shard = keys.shard_of(digest)
        names = [keys.record(shard, record.callback_id), keys.pending_all(shard),
                 keys.events(digest)]
        for each in record.digests or (digest,):
            names += [keys.claim(each), keys.pending(each)]
        self._call(lambda: self._script("_commit_callback")(keys=names, args=[
            token, record.callback_id, record.scheduled_ms, ttl_s, history_ttl_s,
            event_json(event), *fields]))

    def deliver_journaled(self, journaled: LedgerRecord, real: LedgerRecord, ttl_s: int,
                          event: Mapping[str, str | int], history_ttl_s: int) -> bool:
        """The journaled create now exists in Genesys: one atomic step puts the real record in
        its place (false, and nothing recorded, if the request was cancelled meanwhile)."""
        fields = [item for pair in real.to_fields().items() for item in pair]
        shard = real.shard
        names = [keys.record(shard, journaled.callback_id), keys.record(shard, real.callback_id),
                 keys.pending(real.number_key), keys.pending_all(shard),
                 keys.owned(shard, real.agent_id), keys.pending(journaled.number_key),
                 keys.events(real.number_key), keys.outbox(shard),
                 keys.outbox_entry(shard, journaled.request_token)]
        names += [keys.record(shard, journaled.replaces or journaled.callback_id),
                  keys.replacing(shard)]
        names += [keys.consent_state(d) for d in real.digests]
        names += [keys.pending(d) for d in real.digests if d != real.number_key]
        return bool(self._call(lambda: self._script('_deliver')(keys=names, args=[
            journaled.callback_id, real.callback_id, real.scheduled_ms, ttl_s, history_ttl_s,
            journaled.request_token, len(fields), *fields, event_json(event),
            journaled.replaces, len(real.digests)])))

    def queue_callback(self, digest: str, token: str, record: LedgerRecord, ttl_s: int,
                       event: Mapping[str, str | int] | None, history_ttl_s: int,
                       payload: dict[str, Any], first_attempt_ms: int,
                       counts: bool = True, epoch: int = -1, claimed: bool | str = True
                       ) -> str:
        """Journal a callback before (or instead of) its Genesys create: the ledger record (in
        the window, under every digest of ``record.digests``), its history event and the
        outbox entry, in one guarded step.

        ``OK``; ``REVOKED`` when a revocation was stored since the consent check that read
        ``epoch`` (``-1``: not guarded; ``READ_IN_STEP``: while the number stands revoked
        now); ``LOST`` when ``claimed`` and the number's claim is
        no longer ``token``'s. With ``claimed`` a window check (``window_check``), the step
        is the claim too: ``DUPLICATE``, ``BUSY`` or ``LIMIT`` when the claim would not have
        been granted (``DUPLICATE:<id>``: the pending callback found). Nothing is written
        unless ``OK``.
        """
        names, args = self._journal_step(digest, token, record, ttl_s, event, history_ttl_s,
                                         payload, first_attempt_ms, counts, epoch, claimed)
        return str(self._call(lambda: self._script("_journal")(keys=names, args=args)))

    def _journal_step(self, digest: str, token: str, record: LedgerRecord, ttl_s: int,
                      event: Mapping[str, str | int] | None, history_ttl_s: int,
                      payload: dict[str, Any], first_attempt_ms: int, counts: bool,
                      epoch: int, claimed: bool | str) -> tuple[list[str], list[str | int]]:
        """The journal script's keys and arguments (``queue_callback``)."""
        digests = record.digests or (digest,)
        fields = [item for pair in record.to_fields().items() for item in pair]
        shard = keys.shard_of(digests[0])
        names = [keys.record(shard, record.callback_id), keys.pending_all(shard),
                 keys.owned(shard, record.agent_id), keys.outbox(shard),
                 keys.outbox_entry(shard, token), keys.events(digests[0])]
        for d in digests:
            names += [keys.claim(d), keys.pending(d), keys.created(d), keys.consent_state(d)]
        history = [event_json(event)] if event else []
        return names, [
            token, record.callback_id, record.scheduled_ms, ttl_s, epoch,
            1 if counts else 0, record.created_ms, json.dumps(payload), first_attempt_ms,
            claimed if isinstance(claimed, str) else 1 if claimed else 0, history_ttl_s,
            len(fields), *fields, *history]

    def defer_journaled(self, record: LedgerRecord, payload: dict[str, Any],
                        next_ms: int, event: Mapping[str, str | int], history_ttl_s: int) -> bool:
        """A journaled create Genesys could not take now: QUEUED, next attempt at
        ``next_ms``, in one step; false (nothing written) when it was cancelled meanwhile."""
        shard = record.shard
        names = [keys.record(shard, record.callback_id),
                 keys.outbox_entry(shard, record.request_token), keys.outbox(shard),
                 keys.events(record.number_key)]
        return bool(self._call(lambda: self._script("_defer")(keys=names, args=[
            record.request_token, json.dumps(payload), next_ms, history_ttl_s,
            event_json(event)])))

    def dead_letter_callback(self, shard: str, token: str, attempts: int, error: str,
                             at_ms: int, record: LedgerRecord | None,
                             event: Mapping[str, str | int], history_ttl_s: int) -> bool:
        """Keep an outbox entry (of ``shard``) as a dead letter and take its record out of
        the window, in one step; false (the entry dropped, nothing kept) when the record was
        cancelled or delivered meanwhile."""
        record_key = keys.record(shard, record.callback_id if record else f"queued-{token}")
        names = [keys.outbox(shard), keys.outbox_entry(shard, token), keys.dead(shard),
                 record_key, keys.pending_all(shard),
                 keys.owned(shard, record.agent_id if record else ""),
                 keys.events(record.number_key if record else f"{shard}-"),
                 keys.record(shard, record.replaces) if record and record.replaces
                 else record_key,
                 keys.replacing(shard),
                 *(keys.pending(d) for d in (record.digests if record else ()))]
        return bool(self._call(lambda: self._script("_dead_letter")(keys=names, args=[
            token, attempts, error, at_ms, record.callback_id if record else "",
            history_ttl_s, event_json(event), record.replaces if record else ""])))

    def move_callback(self, record: LedgerRecord, scheduled_ms: int, ttl_s: int,
                      event: Mapping[str, str | int], history_ttl_s: int) -> bool:
        """Give a callback its new time (record, indexes, lifetimes, history) in one step,
        only while it is still ``record.version`` with no replacement linked; false, and
        nothing written, when it changed since it was read."""
        shard = record.shard
        names = [keys.record(shard, record.callback_id), keys.pending(record.number_key),
                 keys.pending_all(shard), keys.owned(shard, record.agent_id),
                 keys.events(record.number_key)]
        names += [keys.pending(d) for d in record.digests if d != record.number_key]
        return bool(self._call(lambda: self._script("_move")(keys=names, args=[
            record.version, record.callback_id, scheduled_ms, ttl_s, history_ttl_s,
            event_json(event)])))

    def relink_replacement(self, shard: str, callback_id: str, expected: str,
                           replacement_id: str, version: int = -1) -> bool:
        """Point a callback at a replacement still being created (``""``: drop the link, the
        replacement failed), only while its link is still ``expected`` (and, unless
        ``version`` is -1, the record still that version)."""
        return bool(self._call(lambda: self._script("_relink")(
            keys=[keys.record(shard, callback_id), keys.replacing(shard)],
            args=[expected, replacement_id, callback_id, version])))

    def disconnect_later(self, record: LedgerRecord, ttl_s: int,
                         event: Mapping[str, str | int], history_ttl_s: int,
                         write: bool = False) -> bool:
        """Cancel a pending callback here whose disconnect Genesys did not take, keeping the
        number's window blocked until the worker's retry lands (``write``: the record did not
        exist yet, a create that landed after its cancel). False when it was no longer
        pending (nothing written)."""
        fields = [item for pair in record.to_fields().items() for item in pair] if write else []
        shard = record.shard
        names = [keys.record(shard, record.callback_id), keys.pending_all(shard),
                 keys.owned(shard, record.agent_id), keys.revoking(shard),
                 keys.events(record.number_key), *(keys.pending(d) for d in record.digests)]
        return bool(self._call(lambda: self._script("_disconnect_later")(keys=names, args=[
            record.callback_id, record.scheduled_ms, ttl_s, history_ttl_s, len(fields),
            *fields, event_json(event)])))

    def disconnected(self, record: LedgerRecord) -> None:
        """The pending disconnect landed (or Genesys no longer knows the callback)."""
        names = [keys.record(record.shard, record.callback_id), keys.revoking(record.shard),
                 *(keys.pending(d) for d in record.digests)]
        self._call(lambda: self._script("_disconnected")(keys=names, args=[record.callback_id]))

    def mark_cancel_asked(self, shard: str, callback_id: str, check_ms: int = 0) -> None:
        """Note that a cancel is being sent for this callback (only while it exists); the
        worker reads it from ``check_ms`` on."""
        self._call(lambda: self._script("_mark_asked")(
            keys=[keys.record(shard, callback_id), keys.in_doubt(shard)],
            args=["cx", "1", check_ms, callback_id]))

    def mark_reschedule_asked(self, shard: str, callback_id: str, asked_ms: int,
                              check_ms: int) -> None:
        """Note that a reschedule's PATCH is being sent (only while the record exists); the
        worker reads the callback from ``check_ms`` on unless the reschedule commits."""
        self._call(lambda: self._script("_mark_asked")(
            keys=[keys.record(shard, callback_id), keys.in_doubt(shard)],
            args=["rx", asked_ms, check_ms, callback_id]))

    def clear_reschedule_asked(self, shard: str, callback_id: str, asked_ms: int) -> bool:
        """The reschedule asked at ``asked_ms`` is no longer in doubt; false (the flag kept)
        when another reschedule asked since."""
        return bool(self._call(lambda: self._script("_clear_reschedule")(
            keys=[keys.record(shard, callback_id)], args=[asked_ms])))

    def lock_change(self, callback_id: str, holder: str, ttl_ms: int) -> bool:
        """Take the callback's change lock for ``holder`` (false while another holds it)."""
        return bool(self._call(lambda: self._r.set(keys.change_lock(callback_id), holder,
                                                   nx=True, px=ttl_ms)))

    def unlock_change(self, callback_id: str, holder: str) -> None:
        """Give the change lock back, only if ``holder`` still has it."""
        self._release(keys.change_lock(callback_id), holder)

    def replaced_awaiting_disconnect(self, shard: str, limit: int) -> list[str]:
        """The shard's callbacks with a replacement whose own disconnect has not succeeded
        yet."""
        return [str(m) for m in cast(list[str], self._call(
            lambda: self._r.srandmember(keys.replacing(shard), limit)))]

    def forget_replacement(self, shard: str, callback_id: str) -> None:
        """Stop retrying the disconnect of a replaced callback (it has ended)."""
        self._call(lambda: self._r.srem(keys.replacing(shard), callback_id))

    def callback(self, callback_id: str, shard: str | None = None) -> dict[str, str] | None:
        """A ledger record's hash, or ``None`` (``shard`` unknown: looked for in every
        shard, in one round trip)."""
        found = self.callbacks([callback_id], shard)
        return found[0] if found else None

    def callbacks(self, callback_ids: list[str], shard: str | None = None
                  ) -> list[dict[str, str]]:
        """Several ledger records' hashes in one round trip, skipping those that are gone
        (``shard`` unknown, as for an id a caller or Genesys gave: every shard is read)."""
        return self._records(callback_ids, shard)

    def close_callback(self, record: LedgerRecord, state: str,
                       event: Mapping[str, str | int] | None, history_ttl_s: int) -> None:
        """Mark a pending callback terminal, take it out of the window and note ``event`` in
        the history (None: a bookkeeping step with nothing to show as evidence); one that
        already ended keeps its first end."""
        shard = record.shard
        names = [keys.record(shard, record.callback_id), keys.pending_all(shard),
                 keys.replacing(shard), keys.events(record.number_key),
                 *(keys.pending(d) for d in record.digests)]
        self._call(lambda: self._script("_close_callback")(keys=names, args=[
            state, record.callback_id, history_ttl_s,
            event_json(event) if event is not None else ""]))

    def append_history(self, digest: str, event: Mapping[str, str | int], ttl_s: int) -> None:
        """Add one event to the number's evidence history (kept ``ttl_s`` after the last)."""
        pipe = self._r.pipeline(transaction=True)
        self._append_history(pipe, digest, event, ttl_s)
        self._call(pipe.execute)

    def history(self, digests: tuple[str, ...]) -> list[dict[str, Any]]:
        """Every evidence event of a number (under any PII key), in the order written, each
        as it was stored."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.lrange(keys.events(digest), 0, -1)
        rows: list[list[str]] = self._call(pipe.execute)
        # Each list is in order already; several digests' lists merge by their times.
        return sorted((json.loads(raw) for row in rows for raw in row),
                      key=lambda e: int(e.get("t") or 0))

