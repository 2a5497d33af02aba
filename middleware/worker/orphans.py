"""The orphan sweep: a callback Genesys holds with one of our ``requestToken``s that the
ledger does not own is disconnected, so a number never has two (SPEC §4 Worker).

A create that timed out may still land long after we gave up on it (the outbox then retried
it, or the request was cancelled or dead-lettered meanwhile). Every create sent with a token
that may run twice is watched (``Lifecycle.watch_late_create``); while the outbox
still has the token to deliver, the outbox decides (it adopts what it finds). After that,
each round looks the token up with the analytics query the outbox already uses, and
disconnects every open callback carrying it that is not a pending callback of the ledger.

The same round finishes the disconnects a ``revoke-consent`` could not do when it answered
(Genesys unreachable then), so a revoked number keeps no live callback (SPEC §4 Lifecycle 2).
"""

from __future__ import annotations

import logging

from middleware.actions.answers import from_ms
from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.genesys.client import OAUTH_REFUSED, GenesysClient
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord
from middleware.store import SHARDS, Store

log = logging.getLogger(__name__)


#: Refusals of the search that can be about the token searched for (its query): the
#: sweep moves on to the next. Any other refusal (credentials, permissions, the route
#: itself) would refuse every search alike, each spending a call: the round stops. So
#: does a refused OAuth token fetch, whatever its status (RFC 6749 answers 400 for most).
_THIS_TOKEN = frozenset({400, 422})


class _GenesysDown(Exception):
    """Genesys is unavailable: the round stops here, the next one goes on."""


class OrphanSweep:
    """One round over the watched request tokens, and over the callbacks a revocation could
    not disconnect when it answered."""

    def __init__(self, store: Store, genesys: GenesysClient, lifecycle: Lifecycle,
                 clock: Clock, batch: int) -> None:
        self._store = store
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._clock = clock
        self._batch = batch
        # Where each shard's next page of watched tokens starts. A watch stays until it
        # ends, so reading the first page every round would search the same ``batch``
        # tokens while a shard holds more, and none after them until those watches end.
        # Kept per process: a second worker walks in its own order, which costs calls, not
        # coverage.
        self._offset: dict[str, int] = {}

    def run(self, deadline: Deadline) -> int:
        """Disconnect the callbacks of watched tokens the ledger does not own, and those a
        revocation left, shard by shard; return how many."""
        done = 0
        try:
            for shard in SHARDS:
                done += self._finish_revocations(shard, deadline)
        except _GenesysDown:
            pass
        try:
            for shard in SHARDS:
                if deadline.remaining() < 1.0:
                    break
                done += self._sweep(shard, deadline)
        except _GenesysDown as exc:
            log.warning("orphan sweep paused: genesys", extra={"error": str(exc)})
        return done

    def _finish_revocations(self, shard: str, deadline: Deadline) -> int:
        done = 0
        for callback_id in self._store.cancels_to_finish(shard, self._batch):
            record = self._lifecycle.record(callback_id, shard)
            # Entries written before cancelled callbacks were marked are still pending here.
            if record is not None and record.pending and not record.in_genesys:
                self._lifecycle.close(record, "CANCELLED")
            elif record is not None and (record.disconnecting or record.pending):
                sent = self._send_disconnect(record, deadline)
                if sent is None:
                    raise _GenesysDown("unavailable")
                if not sent:
                    continue
                done += 1
                log.info("cancelled callback disconnected", extra={"callbackId": callback_id})
                if record.disconnecting:
                    self._lifecycle.disconnected(record)
                    continue
                self._lifecycle.close(record, "CANCELLED")
            self._store.cancel_finished(shard, callback_id)
        return done

    def _send_disconnect(self, record: LedgerRecord, deadline: Deadline) -> bool | None:
        """Disconnect in Genesys: true when done (or Genesys no longer knows it), false when
        refused (tried again next round), ``None`` when Genesys is unavailable (stop)."""
        try:
            self._genesys.disconnect_callback(record.callback_id, record.acd_id, deadline)
        except UpstreamRejected as exc:
            return exc.status == 404
        except UpstreamUnavailable:
            return None
        return True

    def _sweep(self, shard: str, deadline: Deadline) -> int:
        now = self._clock.now()
        swept = 0
        offset = self._offset.get(shard, 0)
        page = self._store.watched_orphans(shard, epoch_ms(now), self._batch, offset)
        for token, e164, since_ms in page:
            if deadline.remaining() < 1.0:
                return swept  # this page again next round
            if self._store.in_outbox(shard, token):
                continue
            try:
                found = self._genesys.find_callbacks_by_token(e164, token, from_ms(since_ms),
                                                              now, deadline)
                for callback_id in found:
                    record = self._lifecycle.record(callback_id, shard)
                    if record is not None and record.pending:
                        continue
                    swept += self._disconnect(callback_id, deadline)
            except UpstreamUnavailable as exc:
                raise _GenesysDown(exc.message) from exc
            except UpstreamRejected as exc:
                log.error("orphan search refused by genesys", extra={
                    "shard": shard, "status": exc.status, "error": exc.message})
                if exc.status not in _THIS_TOKEN or exc.code == OAUTH_REFUSED:
                    raise _GenesysDown(exc.message) from exc
                # Refused for this token: stopping would stop at it each time the walk
                # comes back, and sweep nothing after it. It stays watched, searched again
                # on the walk's next pass.
        # A short page is the end of the watch: the next round starts from its front. A
        # round stopped above reads the same page again.
        self._offset[shard] = offset + len(page) if len(page) == self._batch else 0
        return swept

    def _disconnect(self, callback_id: str, deadline: Deadline) -> int:
        try:
            self._genesys.disconnect_callback(callback_id, "", deadline)
        except UpstreamRejected as exc:
            if exc.status != 404:
                log.warning("orphan not disconnected", extra={
                    "callbackId": callback_id, "status": exc.status})
            return 0
        log.warning("callback the ledger does not own disconnected",
                    extra={"callbackId": callback_id})
        return 1
