"""Every Redis key name the service uses, in one place, laid out for Redis Cluster.

Keys never contain a phone number, token or secret: numbers appear only as HMAC digests
(``numbers.NumberKeys``), OAuth clients as a hash of their id.

The ledger is split into ``SHARDS`` shards, and every key of a shard carries the hash tag
``{s<shard>}``, so one shard's keys share a Redis Cluster slot and every atomic step (a
script, a MULTI) stays inside one shard: a number's keys, its callbacks' records, their
outbox entries and that shard's part of every index the worker walks. A number's shard is
the first character of its digests (``NumberKeys`` puts it there, the same under every PII
key, so a rotation never moves a number). The worker walks the shards one by one. Only
single-key state (the Genesys token and budget, idempotency keys, change locks, the
reconciliation's progress) lives outside them. On one primary the layout is the same, so a
dataset moves to a cluster key by key.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "cbm:"

#: The shards, named by one hex digit (the first of a number's digests). Fixed: changing it
#: would move every number to another shard.
SHARDS: Final = tuple("0123456789abcdef")


def shard_of(digest: str) -> str:
    """The shard a number's digest (``NumberKeys``) belongs to."""
    return digest[:1]


def _in(shard: str) -> str:
    """The stem of every key of one shard: its hash tag."""
    return f"{PREFIX}{{s{shard}}}"


# -- a shard's indexes -------------------------------------------------------------------


def pending_all(shard: str) -> str:
    """The shard's pending callbacks, scored by scheduled ms (the worker's walk)."""
    return f"{_in(shard)}:pending"


def records(shard: str) -> str:
    """The shard's ledger records, one packed field per callback (``packed``): no key per
    callback, no TTL; the sweep deletes each once its own expiry passes."""
    return f"{_in(shard)}:cbs"


def windows(shard: str) -> str:
    """The shard's numbers' windows, one packed field per number (``packed``), swept as the
    records are."""
    return f"{_in(shard)}:np"


def owner_counts(shard: str) -> str:
    """How many pending callbacks each agent of the shard owns (``-``: the queue's)."""
    return f"{_in(shard)}:owners"


def outbox(shard: str) -> str:
    """The shard's outbox schedule: request token scored by its next attempt ms."""
    return f"{_in(shard)}:outbox"


def dead(shard: str) -> str:
    """The shard's dead letters: request token scored by when it died."""
    return f"{_in(shard)}:dead"


def replacing(shard: str) -> str:
    """The shard's callbacks with a live replacement whose own disconnect is still to do."""
    return f"{_in(shard)}:replacing"


def in_doubt(shard: str) -> str:
    """The shard's callbacks whose last change is in doubt (a cancel or a PATCH unanswered),
    scored by when the worker reads them next (ms)."""
    return f"{_in(shard)}:in-doubt"


def revoking(shard: str) -> str:
    """The shard's callbacks a revocation could not disconnect yet: the worker finishes
    them."""
    return f"{_in(shard)}:revoking"


def consent_seq(shard: str) -> str:
    """Orders every revocation and lifting consent of the shard's numbers by when it was
    stored (only one number's are ever compared)."""
    return f"{_in(shard)}:consent-seq"


def orphan_watch(shard: str) -> str:
    """Request tokens whose create may still land in Genesys after we gave up on it."""
    return f"{_in(shard)}:orphan-watch"


def orphan_info(shard: str) -> str:
    """Per watched token: the number and the first attempt's ms (JSON)."""
    return f"{_in(shard)}:orphan-watch-info"


def cursors(shard: str) -> str:
    """Where the worker's walks of the shard stopped (a hash, one field per walk)."""
    return f"{_in(shard)}:cursors"


def owned(shard: str, agent_id: str) -> str:
    """An agent's pending callbacks in the shard in the layout before ``packed`` (read,
    never written: ``owner_counts`` counts them now); the queue's shared one set."""
    return f"{_in(shard)}:agent:{agent_id or '-'}:pending"


def record(shard: str, callback_id: str) -> str:
    """One callback's ledger record, as the ledger's scripts name it: a field of
    ``records(shard)`` (``packed``), or this key itself in the layout before."""
    return f"{_in(shard)}:cb:{callback_id}"


def outbox_entry(shard: str, token: str) -> str:
    """One outbox (or dead-letter) entry."""
    return f"{_in(shard)}:outbox:{token}"


def consent(shard: str, consent_id: str) -> str:
    """One consent or revocation record (of a number of the shard)."""
    return f"{_in(shard)}:consent:{consent_id}"


# -- a number's keys (its shard is its digest's) -------------------------------------------


def number(digest: str) -> str:
    """The stem of one number's keys."""
    return f"{_in(shard_of(digest))}:n:{digest}"


def claim(digest: str) -> str:
    """The number's window claim (held by one create, move or reschedule at a time)."""
    return f"{number(digest)}:claim"


def pending(digest: str) -> str:
    """The number's pending callbacks and their scheduled ms, as the ledger's scripts name
    them: a field of ``windows`` of its shard (``packed``), or this sorted set itself in the
    layout before."""
    return f"{number(digest)}:pending"


def created(digest: str) -> str:
    """The number's accepted creates of the last 24 hours (the daily cap)."""
    return f"{number(digest)}:created"


#: How long ``created`` outlives its latest entry: the cap's 24 hours and an hour's margin.
CREATED_KEEP_MS: Final = 25 * 3600 * 1000


def events(digest: str) -> str:
    """The number's evidence history: a list of compact JSON events, oldest first (a list,
    not a stream: a stream's first node alone costs Redis about 4.7 KB)."""
    return f"{number(digest)}:ev"


def consent_state(digest: str) -> str:
    """The number's revocation epoch and latest revocation and lifting consent."""
    return f"{number(digest)}:consent"


# -- single keys, outside the shards -----------------------------------------------------

#: The interval reconciliation's progress (JSON): the end-time floor and the pass under way.
RECONCILE_PASS: Final = f"{PREFIX}reconcile-pass"
#: The queues pending callbacks were written on, scored by when one last was (ms).
RECONCILE_QUEUES: Final = f"{PREFIX}reconcile-queues"


def change_lock(callback_id: str) -> str:
    """Who is changing a callback in Genesys right now (a reschedule, an owner move)."""
    return f"{PREFIX}lock:{callback_id}"


def token(client: str) -> str:
    """The shared Genesys access token of an OAuth client."""
    return f"{PREFIX}token:{client}"


def token_lock(client: str) -> str:
    """Who is fetching the shared token right now."""
    return f"{PREFIX}token-lock:{client}"


def rate(client: str) -> str:
    """The shared Genesys call budget."""
    return f"{PREFIX}rate:{client}"


def idempotency(scope: str) -> str:
    """One idempotency key's record."""
    return f"{PREFIX}idem:{scope}"
