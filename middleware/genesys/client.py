"""The Genesys Cloud Platform API as the service uses it: URLs, token, timeouts, retries, errors.

* OAuth client credentials against ``<login>/oauth/token``. The token is cached in the
  process and shared with every worker and instance through Redis; one worker fetches
  (a Redis lock), the others wait for its result. It is refreshed before expiry and
  fetched again once when Genesys answers 401.
* Every call has connect and read timeouts cut to the request's remaining deadline,
  never follows redirects, and never reads proxy settings from the environment (they
  cost ~0.7 ms a call and could silently reroute traffic).
* A 429 is retried after its ``Retry-After`` only while that still fits in the deadline;
  otherwise ``UpstreamUnavailable`` carries the wait to the caller. 5xx, timeouts and
  connection errors are ``UpstreamUnavailable``; other 4xx are ``UpstreamRejected``.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol, TypeVar, cast
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

import requests
from urllib3.exceptions import NameResolutionError, NewConnectionError

from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.logs import redact
from middleware.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

_TOKEN_WAIT_STEP_S: Final = 0.02
#: Every Genesys route this client calls, as the template its metric label shows. A label
#: is never built from the path itself: an id from a caller ("Callbacks", a number) would
#: mint a new series with each call.
ROUTE_TEMPLATES: Final = (
    "/api/v2/conversations/callbacks",
    "/api/v2/conversations/callbacks/{id}",
    "/api/v2/conversations/callbacks/bulk/disconnect",
    "/api/v2/analytics/conversations/details/query",
    "/api/v2/routing/queues/{id}",
    "/api/v2/users/{id}",
    "/api/v2/users/{id}/queues",
    "/api/v2/teams/{id}/members",
    "/api/v2/workforcemanagement/agents/{id}/managementunit",
    "/api/v2/workforcemanagement/managementunits/{id}",
    "/api/v2/workforcemanagement/managementunits/{id}/agentschedules/search",
    "/api/v2/workforcemanagement/managementunits/{id}/timeoffrequests/query",
    "/api/v2/workforcemanagement/businessunits/{id}",
)
_ROUTES: Final = tuple(
    (re.compile("^" + re.escape(t).replace(re.escape("{id}"), "[^/]+") + "$"), t)
    for t in ROUTE_TEMPLATES)
# A 429 wait is only worth it if the retried call still has this long to run afterwards.
_AFTER_WAIT_MARGIN_S: Final = 0.5
#: Sent on every API call, so Genesys' audit (and the simulator's fidelity log) can tell
#: this product's calls from anything else using the same OAuth client.
USER_AGENT: Final = "agent-owned-callback-middleware"
#: ``UpstreamRejected.code`` of a refused token fetch: it says nothing about the call that
#: needed the token, so a loop over many calls stops at it.
OAUTH_REFUSED: Final = "oauth.client.refused"
# How often an asynchronous WFM answer (status Processing) is asked for again.
_ASYNC_POLL_S: Final = 0.2
#: The longest interval the analytics conversation details query takes with a filter
#: (documented: 7 days without one, 31 with one; the simulator refuses longer ones too).
_LONGEST_FILTERED_INTERVAL: Final = timedelta(days=31)


@dataclass(frozen=True)
class GenesysSettings:
    """Where Genesys is and how long each call may take."""

    api_url: str
    login_url: str
    client_id: str
    client_secret: str
    connect_timeout_s: float
    read_timeout_s: float
    rate_limit_per_min: int = 300


#: Set while only reads the cache answers may be made (``cached_reads_only``).
_CACHED_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("genesys_cached_only",
                                                                    default=False)


class NotCached(Exception):
    """A call to Genesys was about to be made where only cached reads may be."""


@contextmanager
def cached_reads_only() -> Iterator[None]:
    """Within the block, any call that would reach Genesys raises ``NotCached`` before it
    takes anything from the budget: for work that is only worth doing ahead of a check that
    may refuse it (a refusal must not call Genesys, SPEC §4, README Consent)."""
    token = _CACHED_ONLY.set(True)
    try:
        yield
    finally:
        _CACHED_ONLY.reset(token)


class TtlCache:
    """A small per-process cache of Genesys reads; entries expire after ``ttl_s``."""

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._lock = threading.Lock()
        self._data: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._loading: dict[tuple[str, ...], threading.Lock] = {}

    def get(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        """``(True, value)`` while fresh, else ``(False, None)``."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[0] < time.monotonic():
                return False, None
            return True, entry[1]

    def get_or_load(self, key: tuple[str, ...], load: Callable[[], T],
                    keep: Callable[[T], bool] | None = None) -> T:
        """The fresh value, or ``load()`` run once for all threads asking at the same time
        (a cold cache must not send the same read N times into the shared call budget);
        a loaded value ``keep`` refuses is returned but not cached."""
        hit, value = self.get(key)
        if hit:
            return cast(T, value)
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            hit, value = self.get(key)
            if hit:
                return cast(T, value)
            try:
                loaded = load()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            if keep is None or keep(loaded):
                self.put(key, loaded)
            return loaded

    def put(self, key: tuple[str, ...], value: Any) -> None:
        """Keep a value; the oldest entries go when the cache is full."""
        with self._lock:
            if len(self._data) >= self._max:
                for old in sorted(self._data, key=lambda k: self._data[k][0])[: self._max // 4]:
                    del self._data[old]
            self._data[key] = (time.monotonic() + self._ttl, value)


@dataclass(frozen=True)
class Shift:
    """A published WFM shift, UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class CreatedCallback:
    """What Genesys answers to a create: the conversation and the ids disconnect needs."""

    conversation_id: str
    identifiers: list[dict[str, str]]


#: The HTTP session type the composition root passes around: no other package names requests.
HttpSession = requests.Session


def new_session(pool_size: int = 10) -> requests.Session:
    """An HTTP session for Genesys: keep-alive pool, no environment proxies, no redirects."""
    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size,
                                            max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class SharedState(Protocol):
    """The token and call budget every worker and instance shares (the store provides it)."""

    def cached_token(self, client: str) -> tuple[str, float] | None:
        """The shared access token and its refresh-by epoch second, if one is cached."""

    def save_token(self, client: str, token: str, refresh_at: float, ttl_s: int) -> None:
        """Share a fresh token until it should be refreshed."""

    def forget_token(self, client: str, token: str) -> None:
        """Drop the shared token if it is the one Genesys just refused."""

    def acquire_token_lock(self, client: str, holder: str, ttl_ms: int) -> bool:
        """Become the one fetching a token; the lock expires if its holder dies."""

    def release_token_lock(self, client: str, holder: str) -> None:
        """Release the fetch lock if still held."""

    def take_rate_token(self, client: str, capacity: int, per_ms: float) -> int:
        """Take one call from the shared budget; 0, or ms until one is free."""


@dataclass(frozen=True)
class RateAsk:
    """The shared call budget's bucket: its key's client, capacity and refill per ms."""

    client: str
    capacity: int
    per_ms: float


def client_key(client_id: str) -> str:
    """Stable, non-reversible name for an OAuth client in the shared state's keys."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


class GenesysClient:
    """Calls to Genesys Cloud on behalf of one OAuth client."""

    def __init__(self, settings: GenesysSettings, store: SharedState, session: requests.Session,
                 clock: Clock, cache_ttl_s: float = 60.0, metrics: Metrics | None = None
                 ) -> None:
        self._s = settings
        self._clock = clock
        self._store = store
        self._http = session
        self._metrics = metrics or Metrics()
        self._cache = TtlCache(cache_ttl_s)
        self._client = client_key(settings.client_id)
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    # -- token --------------------------------------------------------------------------

    def token(self, deadline: Deadline) -> str:
        """A valid access token, from this process, from Redis, or fetched once for all."""
        now = self._clock.now().timestamp()
        local = self._token
        if local and local[1] > now:
            return local[0]
        with self._lock:
            local = self._token
            if local and local[1] > self._clock.now().timestamp():
                return local[0]
            self._token = self._shared_token(deadline)
            return self._token[0]

    def _shared_token(self, deadline: Deadline) -> tuple[str, float]:
        holder = uuid.uuid4().hex
        while True:
            cached = self._store.cached_token(self._client)
            if cached and cached[1] > self._clock.now().timestamp():
                return cached
            lock_ms = int(max(deadline.remaining(), 1.0) * 1000)
            if self._store.acquire_token_lock(self._client, holder, lock_ms):
                try:
                    return self._fetch_token(deadline)
                finally:
                    self._store.release_token_lock(self._client, holder)
            if deadline.remaining() <= _TOKEN_WAIT_STEP_S:
                raise UpstreamUnavailable("Timed out waiting for another worker's token fetch")
            time.sleep(_TOKEN_WAIT_STEP_S)

    def _fetch_token(self, deadline: Deadline) -> tuple[str, float]:
        try:
            resp = self._http.post(
                f"{self._s.login_url}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self._s.client_id, self._s.client_secret),
                timeout=deadline.timeouts(self._s.connect_timeout_s, self._s.read_timeout_s),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"OAuth token request failed: {type(exc).__name__}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise UpstreamUnavailable(f"OAuth token endpoint answered {resp.status_code}",
                                      status=resp.status_code,
                                      retry_after_s=_retry_after(resp, self._clock))
        if resp.status_code != 200:
            raise UpstreamRejected("Genesys refused the OAuth client credentials "
                                   f"({resp.status_code})", status=resp.status_code,
                                   code=OAUTH_REFUSED)
        body = resp.json()
        lifetime = int(body.get("expires_in", 0))
        if not body.get("access_token") or lifetime <= 0:
            raise UpstreamUnavailable("OAuth token answer had no token or lifetime")
        # Refresh well before expiry so no call ever goes out with a token about to die.
        margin = max(min(60, lifetime // 2), lifetime // 10)
        refresh_at = self._clock.now().timestamp() + lifetime - margin
        self._store.save_token(self._client, body["access_token"], refresh_at, lifetime - margin)
        log.info("genesys token fetched", extra={"expiresIn": lifetime})
        self._metrics.token_fetched()
        return str(body["access_token"]), refresh_at

    def _drop_token(self, token: str) -> None:
        with self._lock:
            if self._token and self._token[0] == token:
                self._token = None
        self._store.forget_token(self._client, token)

    # -- calls --------------------------------------------------------------------------

    def budget(self) -> RateAsk:
        """The shared budget's bucket, so a caller can take a call from it in a Redis step
        it makes anyway (``create_callback(reserved=True)`` then spends it)."""
        limit = self._s.rate_limit_per_min
        # Burst plus a minute's refill never exceeds the limit, so no 60-second window can
        # hold more calls than Genesys allows, whatever the skew between our bucket's clock
        # and Genesys'; half the budget may go in a burst (cold caches after a deploy).
        burst = max(1, limit // 2)
        return RateAsk(self._client, burst, max(limit - burst, 1) / 60_000)

    def _throttle(self, deadline: Deadline) -> None:
        """Take one call from the budget all workers and instances share, waiting for it only
        while the deadline allows: a burst of requests cannot exhaust the org's API quota."""
        ask = self.budget()
        while True:
            wait_ms = self._store.take_rate_token(ask.client, ask.capacity, ask.per_ms)
            if wait_ms <= 0:
                return
            if wait_ms / 1000 + _AFTER_WAIT_MARGIN_S >= deadline.remaining():
                raise UpstreamUnavailable("GENESYS_RATE_LIMIT_PER_MIN reached", status=429,
                                          retry_after_s=wait_ms / 1000)
            time.sleep(wait_ms / 1000)

    def call(self, method: str, path: str, deadline: Deadline, *,
             body: Any = None, params: dict[str, str] | None = None,
             reserved: bool = False) -> Any:
        """One API call with the shared token; the parsed JSON answer (``None`` when empty).
        ``reserved``: the caller already took this call from the budget."""
        if _CACHED_ONLY.get():
            raise NotCached(f"{method} {route_template(path)}")
        refreshed = False
        while True:
            token = self.token(deadline)
            if not reserved:
                self._throttle(deadline)
            reserved = False
            resp = self._send(method, path, deadline, token, body, params)
            if resp.status_code == 401 and not refreshed:
                refreshed = True
                self._drop_token(token)
                continue
            if resp.status_code == 429:
                wait = _retry_after(resp, self._clock)
                if wait is not None and wait + _AFTER_WAIT_MARGIN_S < deadline.remaining():
                    log.info("genesys 429, waiting", extra={"retryAfter": wait, "path": path})
                    time.sleep(wait)
                    continue
                raise UpstreamUnavailable("Genesys rate limit reached", status=429,
                                          code="too.many.requests.retry.after",
                                          retry_after_s=wait)
            return _result(resp, method, path)

    def _send(self, method: str, path: str, deadline: Deadline, token: str,
              body: Any, params: dict[str, str] | None) -> requests.Response:
        if deadline.expired:
            raise UpstreamUnavailable(f"No time left for {method} {path}")
        route = route_template(path)
        try:
            resp = self._http.request(
                method, f"{self._s.api_url}{path}", json=body, params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                         "User-Agent": USER_AGENT},
                timeout=deadline.timeouts(self._s.connect_timeout_s, self._s.read_timeout_s),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self._metrics.genesys_call(method, route, None)
            raise UpstreamUnavailable(f"{method} {path} failed: {type(exc).__name__}",
                                      may_have_run=_may_have_run(exc)) from exc
        self._metrics.genesys_call(method, route, resp.status_code)
        return resp

    # -- callbacks ----------------------------------------------------------------------

    def create_callback(self, command: dict[str, Any], deadline: Deadline,
                        reserved: bool = False) -> CreatedCallback:
        """``POST /api/v2/conversations/callbacks``; the new conversation and its identifiers
        (``reserved``: the call was taken from the budget already, see ``budget``)."""
        answer = self.call("POST", "/api/v2/conversations/callbacks", deadline, body=command,
                           reserved=reserved)
        try:
            return CreatedCallback(
                conversation_id=str(answer["conversation"]["id"]),
                identifiers=[{"type": str(i.get("type", "")), "id": str(i["id"])}
                             for i in answer.get("callbackIdentifiers", [])],
            )
        except (KeyError, TypeError) as exc:
            # Genesys said yes: the callback exists even though we cannot read its id.
            raise UpstreamUnavailable("Genesys create answer lacked the conversation id",
                                      may_have_run=True) from exc

    def get_callback(self, conversation_id: str, deadline: Deadline) -> dict[str, Any] | None:
        """The callback conversation, or ``None`` when Genesys does not know it."""
        try:
            answer = self.call("GET", f"/api/v2/conversations/callbacks/{_seg(conversation_id)}",
                               deadline)
        except UpstreamRejected as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], answer)


    def disconnect_callback(self, conversation_id: str, callback_id: str,
                            deadline: Deadline) -> None:
        """Disconnect a scheduled callback: bulk disconnect with its ACD callback id, or the
        conversation PATCH when that id is unknown (a callback found again by its token)."""
        if not callback_id:
            self.call("PATCH", f"/api/v2/conversations/callbacks/{_seg(conversation_id)}",
                      deadline, body={"state": "disconnected"})
            return
        self.call("POST", "/api/v2/conversations/callbacks/bulk/disconnect", deadline, body={
            "callbackDisconnectIdentifiers": [
                {"conversationId": conversation_id, "callbackId": callback_id}],
        })


    def patch_callback(self, conversation_id: str, agent_id: str, scheduled_utc: str,
                       deadline: Deadline) -> None:
        """Move a scheduled callback to a new time (``PATCH /api/v2/conversations/callbacks``)."""
        self.call("PATCH", "/api/v2/conversations/callbacks", deadline, body={
            "conversationId": conversation_id, "agentId": agent_id,
            "callbackScheduledTime": scheduled_utc})

    def find_callback_by_token(self, e164: str, token: str, since: datetime, until: datetime,
                               deadline: Deadline) -> str | None:
        """The open callback for this number carrying our ``requestToken`` in its data, found
        through the analytics conversation details query; ``None`` if Genesys has none."""
        found = self.find_callbacks_by_token(e164, token, since, until, deadline, first=True)
        return found[0] if found else None

    def find_callbacks_by_token(self, e164: str, token: str, since: datetime,
                                until: datetime, deadline: Deadline, *,
                                first: bool = False) -> list[str]:
        """Every open callback for this number carrying our ``requestToken`` (a create we
        retried can have landed twice), found through the analytics details query.

        The interval pads a day each side: it selects conversations by their start, and a
        callback starts when it is created. It spans at most the 31 days Genesys takes with
        a filter, the latest of them: a create accepted longer ago (a dead letter replayed
        weeks later) is looked for over the last 31 days, where any open callback it made
        would still start, rather than sent as a query Genesys refuses.
        """
        end = until + timedelta(days=1)
        start = max(since - timedelta(days=1), end - _LONGEST_FILTERED_INTERVAL)
        interval = (f"{start.strftime('%Y-%m-%dT%H:%M:%S.000Z')}/"
                    f"{end.strftime('%Y-%m-%dT%H:%M:%S.000Z')}")
        answer = self.call("POST", "/api/v2/analytics/conversations/details/query", deadline,
                           body={
            "interval": interval, "order": "desc", "orderBy": "conversationStart",
            "paging": {"pageSize": 100, "pageNumber": 1},
            "conversationFilters": [{"type": "and", "predicates": [
                {"type": "dimension", "dimension": "conversationEnd", "operator": "notExists"}]}],
            "segmentFilters": [{"type": "and", "predicates": [
                {"type": "dimension", "dimension": "mediaType", "value": "callback"},
                {"type": "dimension", "dimension": "callbackNumber", "value": e164}]}],
        })
        ids: list[str] = []
        for conversation in (answer or {}).get("conversations", []):
            found = self.get_callback(str(conversation["conversationId"]), deadline) or {}
            if any((p.get("attributes") or {}).get("requestToken") == token
                   for p in found.get("participants", [])):
                ids.append(str(conversation["conversationId"]))
                if first:
                    break
        return ids

    def ended_callbacks(self, queue_ids: list[str], start: datetime, end: datetime,
                        page: int, page_size: int, deadline: Deadline
                        ) -> list[tuple[str, datetime]]:
        """One page of the callbacks on these queues that have ended, latest end first:
        ``(conversation id, conversationEnd)``, through the analytics details query.

        ``interval`` selects conversations by their start (documented: the days it
        touches), not by their end: the caller spans every start a pending callback can
        have and reads pages until the ends fall before its cursor.
        """
        body = {
            "interval": f"{_utc(start)}/{_utc(end)}",
            "order": "desc", "orderBy": "conversationEnd",
            "paging": {"pageSize": page_size, "pageNumber": page},
            "conversationFilters": [{"type": "and", "predicates": [
                {"type": "dimension", "dimension": "conversationEnd", "operator": "exists"}]}],
            "segmentFilters": [{"type": "and", "predicates": [
                {"type": "dimension", "dimension": "mediaType", "value": "callback"}],
                "clauses": [{"type": "or", "predicates": [
                    {"type": "dimension", "dimension": "queueId", "value": queue_id}
                    for queue_id in queue_ids]}]}],
        }
        answer = self.call("POST", "/api/v2/analytics/conversations/details/query", deadline,
                           body=body)
        found: list[tuple[str, datetime]] = []
        for conversation in (answer or {}).get("conversations", []):
            text = str(conversation.get("conversationEnd") or "")
            try:
                ended = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            found.append((str(conversation["conversationId"]), ended))
        return found

    # -- cached reads -------------------------------------------------------------------

    def _cached_get(self, key: tuple[str, ...], path: str, deadline: Deadline,
                    params: dict[str, str] | None = None, missing_ok: bool = False) -> Any:
        def load() -> Any:
            try:
                return self.call("GET", path, deadline, params=params)
            except UpstreamRejected as exc:
                if not (missing_ok and exc.status == 404):
                    raise
                return None
        return self._cache.get_or_load(key, load)

    def queue(self, queue_id: str, deadline: Deadline) -> dict[str, Any] | None:
        """The routing queue (with ``agentOwnedRouting``), or ``None`` if unknown."""
        return cast(dict[str, Any] | None, self._cached_get(
            ("queue", queue_id), f"/api/v2/routing/queues/{_seg(queue_id)}", deadline,
            missing_ok=True))

    def agent_time_zone(self, agent_id: str, deadline: Deadline
                        ) -> tuple[str, str] | None:
        """``(management unit id, IANA zone)`` of a WFM agent, or ``None`` without WFM.

        The zone is the business unit's ``settings.timeZone`` (agent → MU → BU).
        """
        ref = self._cached_get(
            ("wfm-agent", agent_id),
            f"/api/v2/workforcemanagement/agents/{_seg(agent_id)}/managementunit",
            deadline, missing_ok=True)
        if not ref:
            return None
        mu_id = str(ref["managementUnit"]["id"])
        bu_id = str((ref.get("businessUnit") or {}).get("id") or "")
        if not bu_id:
            unit = self._cached_get(("mu", mu_id), "/api/v2/workforcemanagement/"
                                    f"managementunits/{_seg(mu_id)}", deadline)
            bu_id = str(unit["businessUnit"]["id"])
        bu = self._cached_get(("bu", bu_id), "/api/v2/workforcemanagement/businessunits/"
                              f"{_seg(bu_id)}", deadline,
                              params={"expand": "settings.timeZone"})
        zone = str(((bu or {}).get("settings") or {}).get("timeZone") or "")
        return (mu_id, zone) if zone else None

    def published_shifts(self, mu_id: str, agent_id: str, start: date, end: date,
                         deadline: Deadline) -> list[Shift] | None:
        """The agent's published shifts between two dates, or ``None`` while WFM is still
        processing the search at the deadline (hours unknown; never cached)."""
        key = ("shifts", mu_id, agent_id, start.isoformat(), end.isoformat())
        return self._cache.get_or_load(
            key, lambda: self._search_shifts(mu_id, agent_id, start, end, deadline),
            keep=lambda shifts: shifts is not None)

    def _search_shifts(self, mu_id: str, agent_id: str, start: date, end: date,
                       deadline: Deadline) -> list[Shift] | None:
        body = {"startDate": f"{start.isoformat()}T00:00:00.000Z",
                "endDate": f"{end.isoformat()}T00:00:00.000Z", "userIds": [agent_id]}
        path = (f"/api/v2/workforcemanagement/managementunits/{_seg(mu_id)}"
                "/agentschedules/search")
        while True:
            answer = self.call("POST", path, deadline, body=body) or {}
            status = str(answer.get("status", ""))
            if status == "Complete":
                break
            # Processing: the API has no read of a pending search, only its notification,
            # so ask again (a repeated search is answered from the finished one) while the
            # deadline leaves room for one more call.
            if status != "Processing" or deadline.remaining() < _ASYNC_POLL_S + \
                    _AFTER_WAIT_MARGIN_S:
                return None
            time.sleep(_ASYNC_POLL_S)
        result = answer.get("result")
        if result is None and answer.get("downloadUrl"):
            # Large results come as a download instead of inline.
            result = self._download(str(answer["downloadUrl"]), deadline)
        if not isinstance(result, dict):
            return None
        shifts = []
        for schedule in result.get("agentSchedules", []):
            if (schedule.get("user") or {}).get("id") != agent_id:
                continue
            for shift in schedule.get("shifts", []):
                begin = datetime.fromisoformat(str(shift["startDate"]).replace("Z", "+00:00"))
                shifts.append(Shift(begin, begin + timedelta(minutes=int(shift["lengthMinutes"]))))
        shifts.sort(key=lambda s: (s.start, s.end))
        return shifts

    def _download(self, url: str, deadline: Deadline) -> Any:
        """The JSON behind a WFM ``downloadUrl``: a pre-signed link, fetched without our
        token (it must never leave for another host), no redirects, within the deadline."""
        if deadline.expired:
            raise UpstreamUnavailable("No time left for a WFM download")
        try:
            resp = self._http.get(url, headers={"Accept": "application/json",
                                                "User-Agent": USER_AGENT},
                                  timeout=deadline.timeouts(self._s.connect_timeout_s,
                                                            self._s.read_timeout_s),
                                  allow_redirects=False)
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"WFM download failed: {type(exc).__name__}") from exc
        return _result(resp, "GET", "WFM download")

    def user(self, user_id: str, deadline: Deadline) -> dict[str, Any] | None:
        """A user in any state with presence, routing status, out of office and team; ``None``
        when Genesys does not know the id.

        Read through the list endpoint: only ``GET /api/v2/users`` takes ``state=any``; the
        single-user GET accepts ``state=active|deleted`` alone, so it cannot show whether
        an agent is inactive.
        """
        return self._cache.get_or_load(("user", user_id),
                                       lambda: self._load_user(user_id, deadline))

    def _load_user(self, user_id: str, deadline: Deadline) -> dict[str, Any] | None:
        answer = self.call("GET", "/api/v2/users", deadline, params={
            "id": user_id, "state": "any", "pageSize": "1",
            "expand": "presence,routingStatus,outOfOffice,team"})
        for entity in (answer or {}).get("entities", []):
            if str(entity.get("id")) == user_id:
                return cast(dict[str, Any], entity)
        return None

    def user_queue_ids(self, user_id: str, deadline: Deadline) -> set[str]:
        """Ids of the queues the user is a member of."""
        return self._cache.get_or_load(("user-queues", user_id),
                                       lambda: self._load_user_queues(user_id, deadline))

    def _load_user_queues(self, user_id: str, deadline: Deadline) -> set[str]:
        ids: set[str] = set()
        for page in range(1, 11):
            answer = self.call("GET", f"/api/v2/users/{_seg(user_id)}/queues", deadline,
                               params={"pageSize": "100", "pageNumber": str(page)})
            ids |= {str(q["id"]) for q in answer.get("entities", [])}
            if page >= int(answer.get("pageCount") or 1):
                break
        return ids

    def team_member_ids(self, team_id: str, deadline: Deadline) -> list[str]:
        """Ids of a team's members (cursor paging)."""
        return self._cache.get_or_load(("team", team_id),
                                       lambda: self._load_team(team_id, deadline))

    def _load_team(self, team_id: str, deadline: Deadline) -> list[str]:
        ids: list[str] = []
        params = {"pageSize": "100"}
        for _ in range(20):
            answer = self.call("GET", f"/api/v2/teams/{_seg(team_id)}/members", deadline,
                               params=params)
            ids += [str(m["id"]) for m in answer.get("entities", [])]
            after = _query_value(str(answer.get("nextUri") or ""), "after")
            if not after:
                break
            params = {"pageSize": "100", "after": after}
        return ids

    def approved_time_off_days(self, mu_id: str, user_id: str, start: date, end: date,
                               zone: str, deadline: Deadline) -> set[date]:
        """Local dates (in ``zone``, the management unit's) of the user's approved time off."""
        key = ("time-off", mu_id, user_id, start.isoformat(), end.isoformat())
        return self._cache.get_or_load(
            key, lambda: self._load_time_off(mu_id, user_id, start, end, zone, deadline))

    def _load_time_off(self, mu_id: str, user_id: str, start: date, end: date, zone: str,
                       deadline: Deadline) -> set[date]:
        answer = self.call(
            "POST", f"/api/v2/workforcemanagement/managementunits/{_seg(mu_id)}"
            "/timeoffrequests/query", deadline, body={
                "userIds": [user_id], "statuses": ["APPROVED"],
                "dateRange": {"startDate": start.isoformat(), "endDate": end.isoformat()}}) \
            or {}
        if not answer.get("entities") and answer.get("downloadUrl"):
            answer = self._download(str(answer["downloadUrl"]), deadline) or {}
        days: set[date] = set()
        for entry in answer.get("entities", []):
            if entry.get("status") != "APPROVED":
                continue
            days |= {date.fromisoformat(d) for d in entry.get("fullDayManagementUnitDates", [])}
            for text in entry.get("partialDayStartDateTimes", []):
                start_utc = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
                days.add(start_utc.astimezone(ZoneInfo(zone)).date() if zone
                         else start_utc.date())
        return days


#: Participant states after which a callback will never ring again (CallbackMediaParticipant).
ENDED_STATES: Final = frozenset({"disconnected", "terminated"})


def _utc(instant: datetime) -> str:
    """An instant as the analytics API writes it (``2025-07-01T14:30:00.000Z``)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{instant.microsecond // 1000:03d}Z"


def callback_end_state(conversation: dict[str, Any] | None) -> str | None:
    """``DISCONNECTED`` when Genesys shows the callback over, else ``None``.

    A conversation Genesys no longer knows counts as disconnected. The participant states
    cannot tell a completed callback from a cancelled one, so neither is claimed.
    """
    if conversation is None:
        return "DISCONNECTED"
    states = [str(p.get("state", "")).lower() for p in conversation.get("participants", [])]
    if states and all(s in ENDED_STATES for s in states):
        return "DISCONNECTED"
    return None


def callback_scheduled_ms(conversation: dict[str, Any] | None) -> int | None:
    """The time Genesys holds the callback at (epoch ms), from its participants, or ``None``."""
    for participant in (conversation or {}).get("participants", []):
        text = participant.get("callbackScheduledTime")
        if isinstance(text, str) and text:
            try:
                instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            return int(instant.timestamp() * 1000)
    return None


def _query_value(uri: str, name: str) -> str:
    values = parse_qs(urlsplit(uri).query).get(name, [])
    return values[0] if values else ""


def route_template(path: str) -> str:
    """The metric label of a path: its template from ``ROUTE_TEMPLATES``, else ``other``."""
    # Fixed segments win over {id}: "callbacks/bulk/disconnect" is not "callbacks/{id}".
    for pattern, template in _ROUTES:
        if "{id}" not in template and pattern.match(path):
            return template
    for pattern, template in _ROUTES:
        if pattern.match(path):
            return template
    return "other"


@functools.lru_cache(maxsize=4096)
def _seg(value: str) -> str:
    """An id as one URL path segment, whatever a caller put in it (the same few ids come
    back on every request: quoted once)."""
    return quote(value, safe="")


def _retry_after(resp: requests.Response, clock: Clock) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - clock.now().timestamp())
    except (TypeError, ValueError):
        return None


def _may_have_run(exc: requests.RequestException) -> bool:
    """Whether a failed call may still have reached Genesys and taken effect."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        # A refused or unresolvable connection never carried the request.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return not isinstance(reason, (NewConnectionError, NameResolutionError))
    return True


def _result(resp: requests.Response, method: str, path: str) -> Any:
    if resp.status_code >= 500:
        raise UpstreamUnavailable(f"{method} {path} answered {resp.status_code}",
                                  status=resp.status_code, may_have_run=True)
    if 300 <= resp.status_code < 400:
        raise UpstreamRejected(f"{method} {path} answered a redirect, not followed",
                               status=resp.status_code)
    if resp.status_code >= 400:
        code, message = "", ""
        try:
            error = resp.json()
            code, message = str(error.get("code", "")), str(error.get("message", ""))
        except ValueError:
            pass
        raise UpstreamRejected(redact(message or f"{method} {path} answered {resp.status_code}"),
                               status=resp.status_code, code=code)
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamUnavailable(f"{method} {path} answered non-JSON") from exc
