"""The two yardsticks of ``bench/run``, served under the same gunicorn config as the service.

* ``POST /bare``: read the JSON body, answer a small JSON object. The ceiling: what
  gunicorn + Falcon on this machine serve when a request does nothing.
* ``POST /reference``: only the work a create-callback cannot avoid, done with the
  product's own pieces: the create-callback input schema (``Contract.parse``), the number
  parse (``numbers.normalise``), two Redis round trips (an atomic check-and-claim of the
  number, then one script that records the callback and its window entry) and one Genesys
  create through the same HTTP client (``genesys.new_session``) to the same simulator,
  with the product's ``User-Agent`` (the simulator checks every such request against the
  SDK's models, so its work per create is the same for both).
  No consent record, time rules, owner checks, logs or complete answer.

Reads the service's environment: ``REDIS_URL``, ``GENESYS_API_URL``, ``GENESYS_LOGIN_URL``,
``GENESYS_CLIENT_ID``, ``GENESYS_CLIENT_SECRET``, ``PII_KEYS``. Keys are under
``bench:ref:``, apart from the service's.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import falcon

from middleware.contracts import load_contracts
from middleware.errors import ContractViolation
from middleware.genesys.client import USER_AGENT, new_session
from middleware.rules.number import NumberKeys, normalise
from middleware.store import connect, keys

PREFIX: Final = "bench:ref:"
WINDOW_MS: Final = 48 * 3600 * 1000
CLAIM_TTL_MS: Final = 10_000
LEAD: Final = timedelta(minutes=5)

# Round trip 1: a pending callback in the window, or the number claimed for this request.
_CLAIM: Final = """
local found = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 1)
if #found > 0 then return {'DUPLICATE', found[1]} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then return {'CLAIMED'} end
return {'BUSY'}
"""

# Round trip 2: the record, its window entry, the claim released.
_COMMIT: Final = """
redis.call('HSET', KEYS[3], 'id', ARGV[2], 's', ARGV[3], 'a', ARGV[5], 'q', ARGV[6],
           'st', 'PENDING')
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class _Genesys:
    """One client-credentials token per process, then agent-owned creates."""

    def __init__(self, api_url: str, login_url: str, client_id: str, secret: str) -> None:
        self._api = api_url.rstrip("/")
        self._login = login_url.rstrip("/")
        self._auth = (client_id, secret)
        self._http = new_session()
        self._token = ""
        self._lock = threading.Lock()

    def _bearer(self) -> str:
        with self._lock:
            if not self._token:
                resp = self._http.post(f"{self._login}/oauth/token", auth=self._auth,
                                       data={"grant_type": "client_credentials"},
                                       timeout=(1, 3), allow_redirects=False)
                resp.raise_for_status()
                self._token = str(resp.json()["access_token"])
            return self._token

    def create(self, command: dict[str, Any]) -> dict[str, Any]:
        resp = self._http.post(
            f"{self._api}/api/v2/conversations/callbacks", json=command,
            headers={"Authorization": f"Bearer {self._bearer()}", "Accept": "application/json",
                     "User-Agent": USER_AGENT},
            timeout=(1, 3), allow_redirects=False)
        resp.raise_for_status()
        return dict(resp.json())


class Bare:
    """``POST /bare``: the ceiling."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read the body, answer a small JSON object."""
        req.get_media()
        resp.media = {"outcome": "OK", "requestId": uuid.uuid4().hex}


class Reference:
    """``POST /reference``: the unavoidable work of a create-callback."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._contract = load_contracts()["create-callback"]
        self._keys = NumberKeys(tuple(k.encode() for k in environ["PII_KEYS"].split(",")))
        # The store's client as ``connect`` finds it (standalone or cluster), for scripts.
        redis_client: Any = connect(environ["REDIS_URL"], 1.0).client()
        self._claim = redis_client.register_script(_CLAIM)
        self._commit = redis_client.register_script(_COMMIT)
        self._genesys = _Genesys(environ["GENESYS_API_URL"], environ["GENESYS_LOGIN_URL"],
                                 environ["GENESYS_CLIENT_ID"], environ["GENESYS_CLIENT_SECRET"])

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Validate, parse the number, claim it, create in Genesys, record it."""
        try:
            fields = self._contract.parse(json.loads(req.bounded_stream.read() or b"null"))
        except (ValueError, ContractViolation) as exc:
            raise falcon.HTTPBadRequest(description=str(exc)) from exc
        number = normalise(str(fields["customerNumber"]), "US")
        if number is None:
            resp.media = {"outcome": "REJECTED", "reason": "INVALID_NUMBER"}
            return
        digest = self._keys.current(number.e164)
        # Laid out as the product's keys: the number's shard as hash tag, one slot for all.
        stem = f"{PREFIX}{{s{keys.shard_of(digest)}}}"
        claim_key, pending_key = f"{stem}:n:{digest}:claim", f"{stem}:n:{digest}:pending"
        token = uuid.uuid4().hex
        now = datetime.now(UTC)
        now_ms = int(now.timestamp() * 1000)
        found = self._claim(keys=[claim_key, pending_key],
                            args=[token, now_ms + WINDOW_MS, CLAIM_TTL_MS])
        if found[0] != "CLAIMED":
            resp.media = {"outcome": "DUPLICATE" if found[0] == "DUPLICATE" else "REJECTED"}
            return
        scheduled = now + LEAD
        when = scheduled.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        created = self._genesys.create({
            "routingData": {"queueId": fields["queueId"],
                            "scoredAgents": [{"agent": {"id": fields["agentId"]}, "score": 100}],
                            "routingFlags": ["AGENT_OWNED_CALLBACK"]},
            "callbackNumbers": [number.e164], "callbackScheduledTime": when,
            "validateCallbackNumbers": True, "data": {"requestToken": token},
            "callbackUserName": str(fields.get("customerName") or ""),
        })
        callback_id = str(created["conversation"]["id"])
        self._commit(keys=[claim_key, pending_key, f"{stem}:cb:{callback_id}"],
                     args=[token, callback_id, int(scheduled.timestamp() * 1000),
                           int(WINDOW_MS / 1000) + 8 * 86400, fields["agentId"],
                           fields["queueId"]])
        resp.media = {"outcome": "CREATED", "reason": "OK", "callbackId": callback_id,
                      "customerNumberE164": number.e164, "scheduledTimeUtc": when}


def create_reference_app(environ: dict[str, str]) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app with both routes."""
    app = falcon.App()
    app.add_route("/bare", Bare())
    app.add_route("/reference", Reference(environ))
    return app


app = create_reference_app(dict(os.environ))
