"""Every Redis key name the service uses, in one place.

Keys never contain a phone number, token or secret: numbers appear only as HMAC digests
(``numbers.NumberKeys``), OAuth clients as a hash of their id. A number's keys share one
hash tag, ``{n:<digest>}``, so the keys of one number's step share a Redis Cluster slot;
the steps that also touch the global indexes (``PENDING``, ``OUTBOX``, owners' sets) need
a single primary (see README).
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "cbm:"

#: Every pending callback, scored by its scheduled ms (the worker's walk).
PENDING: Final = f"{PREFIX}pending"
#: Outbox schedule: request token scored by its next attempt ms.
OUTBOX: Final = f"{PREFIX}outbox"
#: Dead letters: request token scored by when it died.
DEAD: Final = f"{PREFIX}dead"
#: Callbacks with a live replacement whose own disconnect is still to do.
REPLACING: Final = f"{PREFIX}replacing"
RECONCILE_CURSOR: Final = f"{PREFIX}reconcile-cursor"
#: The interval reconciliation's progress (JSON): the end-time floor and the pass under way.
RECONCILE_PASS: Final = f"{PREFIX}reconcile-pass"
#: The queues pending callbacks were written on, scored by when one last was (ms).
RECONCILE_QUEUES: Final = f"{PREFIX}reconcile-queues"
#: Callbacks whose last change is in doubt (a cancel or a PATCH unanswered), scored by when
#: the worker reads them next (ms).
IN_DOUBT: Final = f"{PREFIX}in-doubt"
REASSIGN_CURSOR: Final = f"{PREFIX}reassign-cursor"
ORPHAN_CURSOR: Final = f"{PREFIX}orphan-cursor"
#: Where the trim duty's walks stopped (``worker/trim.py``).
TRIM_CURSOR: Final = f"{PREFIX}trim-cursor"
#: Orders every revocation and lifting consent by when it was stored.
CONSENT_SEQ: Final = f"{PREFIX}consent-seq"
#: Request tokens whose create may still land in Genesys after we gave up on it.
ORPHAN_WATCH: Final = f"{PREFIX}orphan-watch"
#: Callbacks a revocation could not disconnect yet: the worker finishes them.
REVOKING: Final = f"{PREFIX}revoking"
#: Per watched token: the number and the first attempt's ms (JSON).
ORPHAN_INFO: Final = f"{PREFIX}orphan-watch-info"


def number(digest: str) -> str:
    """The hash-tagged stem of one number's keys."""
    return f"{PREFIX}{{n:{digest}}}"


def claim(digest: str) -> str:
    """The number's window claim (held by one create, move or reschedule at a time)."""
    return f"{number(digest)}:claim"


def pending(digest: str) -> str:
    """The number's pending callbacks, scored by scheduled ms."""
    return f"{number(digest)}:pending"


def created(digest: str) -> str:
    """The number's accepted creates of the last 24 hours (the daily cap)."""
    return f"{number(digest)}:created"


def history(digest: str) -> str:
    """The number's evidence stream as written before ``events`` (read, never written)."""
    return f"{number(digest)}:history"


def events(digest: str) -> str:
    """The number's evidence history: a list of compact JSON events, oldest first (a list,
    not a stream: a stream's first node alone costs Redis about 4.7 KB)."""
    return f"{number(digest)}:ev"


def consent_state(digest: str) -> str:
    """The number's revocation epoch and latest revocation and lifting consent."""
    return f"{number(digest)}:consent"


def record(callback_id: str) -> str:
    """One callback's ledger record."""
    return f"{PREFIX}cb:{callback_id}"


def owned(agent_id: str) -> str:
    """An agent's pending callbacks; callbacks that went to the queue share one set."""
    return f"{PREFIX}agent:{agent_id or '-'}:pending"


def change_lock(callback_id: str) -> str:
    """Who is changing a callback in Genesys right now (a reschedule, an owner move)."""
    return f"{PREFIX}cb:{callback_id}:lock"


def outbox_entry(token: str) -> str:
    """One outbox (or dead-letter) entry."""
    return f"{PREFIX}outbox:{token}"


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


def consent(consent_id: str) -> str:
    """One consent or revocation record."""
    return f"{PREFIX}consent:{consent_id}"
