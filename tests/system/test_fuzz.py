"""Schemathesis against /openapi.json: generated requests to every action, in-process.

The app is the real one (``create_app``) on the suite's redis-server and simulator, with a
FixedClock. Each action gets ``POSITIVE_CASES`` schema-valid and ``NEGATIVE_CASES``
schema-breaking bodies, derandomized. Most bodies get some fields swapped for seed values
that reach deep into the pipeline (valid numbers, the demo agent and queue, real callback
and consent ids, well-formed and tricky times), since the schemas alone (plain strings)
rarely get past INVALID_NUMBER. The generation runs once per module; each test below
asserts one property over what it recorded, so a failure names the check, the action and
the smallest offending requests (with the service's traceback for a 5xx).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.testing
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from middleware.app import create_app
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.contracts import ACTIONS
from middleware.genesys.client import new_session
from middleware.store import connect
from tests.conftest import (
    API_KEY,
    AUTH,
    BASIC_PASSWORD,
    BASIC_USER,
    DEMO_AGENT,
    DEMO_QUEUE,
    T0,
    RedisServer,
    Simulator,
    create_body,
    service_env,
    when,
)

POSITIVE_CASES = 140
NEGATIVE_CASES = 40
MIN_TOTAL_CASES = 1000
#: Bound on the whole module's generation; the suite's own timeout is 120 s per test.
TIME_BUDGET_S = 90

CHECKS: dict[str, Callable[..., Any]] = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_schema_conformance": response_schema_conformance,
    "ignored_auth": ignored_auth,
}

#: Product bugs the fuzzing found, as ``(check, action) -> reason``; those tests xfail strictly.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@dataclass
class Finding:
    """One failed check: the request sent and the answer received."""

    title: str
    body: Any
    headers: dict[str, str]
    status: int
    answer: str
    trace: str = ""

    def describe(self) -> str:
        """The request and response (and the service's traceback), for the assertion message."""
        return (f"{self.title}\n  request body: {json.dumps(self.body, default=str)[:600]}\n"
                f"  headers: {self.headers}\n  -> {self.status} {self.answer[:600]}"
                + (f"\n  traceback (last lines):\n{self.trace}" if self.trace else ""))


class _Tracebacks(logging.Handler):
    """Keeps the traceback the service logs with an unhandled error, per request."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            lines = "".join(traceback.format_exception(*record.exc_info)).splitlines()
            self.last = "\n".join(lines[-12:])


@dataclass
class ActionRun:
    """What the generated cases for one action produced."""

    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[Finding]] = field(default_factory=dict)

    def record(self, check: str, finding: Finding) -> None:
        """Keep the three smallest distinct failures of a check."""
        found = self.failures.setdefault(check, [])
        if any(f.title == finding.title and f.body == finding.body for f in found):
            return
        found.append(finding)
        found.sort(key=lambda f: len(json.dumps(f.body, default=str)))
        del found[3:]


@dataclass(frozen=True)
class Seeds:
    """Per field: values that pass its check, and near misses that should be refused."""

    good: dict[str, list[Any]]
    tricky: dict[str, list[Any]]


def _seeds(callback_ids: list[str], consent_ids: list[str]) -> Seeds:
    """Seeds for every action's fields; ids are the ones the fixture just created."""
    good: dict[str, list[Any]] = {
        "customerNumber": ["+1 415 555 2671", "(212) 555-0199", "tel:+1-305-555-0123;ext=9",
                           "+16135550123", "+44 20 7946 0958"],
        "customerCountry": ["US"],
        "agentId": [DEMO_AGENT],
        "queueId": [DEMO_QUEUE],
        "consentGiven": [True],
        "consentId": consent_ids,
        "consentSource": ["IVR_KEYPRESS", "AGENT_VERBAL"],
        "consentCapturedAt": [when("2026-11-23T17:55:00Z"), when("2026-11-23T12:55:00-05:00")],
        "requestedTime": [when("2026-11-23T19:00:00Z"), when("2026-11-23T14:00:00-05:00"),
                          when("2026-11-24T15:30:00+00:00")],
        "requestedLocalTime": [when("2026-11-23T15:30"), when("2026-11-24T10:00")],
        "timeZone": ["America/New_York", "Europe/London", "UTC"],
        "callbackId": callback_ids,
        "conversationId": ["conv-fuzz-1", "conv-fuzz-2"],
        "idempotencyKey": ["fuzz-key-1", "fuzz-key-2"],
        "priority": [0, 5],
        "cancelPending": [True, False],
        "allowReassignment": [True, False],
    }
    tricky: dict[str, list[Any]] = {
        "customerNumber": ["4155552671", "555", "+", "tel:;", "+1 415 555 2671 ext. 99999999"],
        "customerCountry": ["CA", "GB", "gb", "ZZ", "U"],
        "agentId": ["a1000000-0000-4000-8000-000000000002",
                    "a1000000-0000-4000-8000-000000000004",
                    "a1000000-0000-4000-8000-000000000010",
                    "a1000000-0000-4000-8000-000000000099", "../../sim/reset", "%2F", "?a=b#"],
        "queueId": ["b1000000-0000-4000-8000-000000000099", "?x=1", "../callbacks"],
        "consentGiven": [False],
        "consentId": ["00000000-0000-4000-8000-000000000000", "ABC-def", "../x"],
        "consentSource": ["SMS"],
        "consentCapturedAt": [when("2026-11-19T17:55:00Z"), when("2026-11-23T18:30:00+00:00"),
                              when("2026-11-23T17:55:00"), "yesterday",
                              "0001-01-01T00:00:00+14:00"],
        "requestedTime": [when("2026-11-23T19:00:00"), when("2026-12-31T19:00:00Z"),
                          when("2026-11-23T17:00:00Z"), when("2026-11-24T03:00:00+05:30"), "soon",
                          "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                          when("2026-11-23T19:00:00+23:59")],
        "requestedLocalTime": ["2027-03-14T02:30", "2026-11-01T01:30", when("2026-11-23T15:30Z"),
                               "25:00", "9999-12-31T23:59", "0001-01-01T00:00"],
        "timeZone": ["Asia/Kolkata", "Not/AZone", "../../../etc/passwd", "America/", "EST5EDT",
                     "/usr/share/zoneinfo/UTC"],
        "callbackId": ["0" * 8, "no such id", "x" * 64],
        "conversationId": ["x" * 300],
        "idempotencyKey": ["k" * 256],
        "priority": [-1, 2**31, 2**63],
        "cancelPending": [True],
        "allowReassignment": [False],
    }
    return Seeds(good, tricky)


def _steered(operation: Any, mode: GenerationMode, seeds: Seeds) -> Any:
    """Generated cases; in three of four JSON object bodies each known field is kept, set
    to a good or a tricky seed, or dropped (if optional), so the checks behind the contract
    run too."""
    schema = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    required = set(schema.get("required", []))
    counter = itertools.count()

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        case = draw(operation.as_strategy(mode))
        # Hypothesis favours a few small draws; a Random seeded by the example's position
        # spreads the steering evenly and still repeats exactly from run to run.
        rnd = random.Random(f"{operation.label} {mode.value} {next(counter)}")  # noqa: S311
        body = case.body
        if not isinstance(body, dict) or rnd.random() < 0.25:
            return case
        for name in schema["properties"]:
            choice = rnd.randrange(6)  # 0 keep, 1-2 good, 3 tricky, 4-5 drop or good
            good, tricky = seeds.good.get(name), seeds.tricky.get(name)
            if choice == 0 or not good:
                continue
            if choice == 3 and tricky:
                body[name] = rnd.choice(tricky)
            elif choice >= 4 and name not in required:
                body.pop(name, None)
            else:
                body[name] = rnd.choice(good)
        return case
    return build()


def _headers(case: Any) -> dict[str, str]:
    """The case's headers, credentials blanked, for a report."""
    return {k: ("<redacted>" if k.lower() in ("authorization", "x-api-key") else str(v))
            for k, v in (case.headers or {}).items()}


def _run_action(operation: Any, seeds: Seeds, run: ActionRun,
                deadline: float, traces: _Tracebacks) -> None:
    """Send every generated case of one operation and run each check on its answer."""
    for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_CASES),
                           (GenerationMode.NEGATIVE, NEGATIVE_CASES)):
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                  print_blob=False)
        @given(case=_steered(operation, mode, seeds))
        def exercise(case: Any) -> None:
            if time.monotonic() > deadline:
                return
            run.cases += 1
            traces.last = ""
            response = case.call()
            run.statuses[response.status_code] += 1
            if response.status_code == 200:
                answer = response.json()
                run.outcomes[f"{answer.get('outcome')} {answer.get('reason')}"] += 1
            for name, check in CHECKS.items():
                try:
                    case.validate_response(response, checks=[check])
                except (FailureGroup, Failure) as exc:
                    failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                    titles = [f"{f.title}: {f.message}" for f in failures]
                    run.record(name, Finding("; ".join(titles), case.body, _headers(case),
                                             response.status_code, response.text,
                                             traces.last))
        exercise()


@pytest.fixture(scope="module")
def fuzz_app(redis_server: RedisServer, sim_server: Simulator
             ) -> Iterator[falcon.App[falcon.Request, falcon.Response]]:
    """The app on an emptied Redis and a reset simulator, with a few callbacks and consents."""
    redis_server.client().flushdb()
    sim_server.control("POST", "reset")
    sim_server.control("PUT", "ratelimit", {"perMinute": 100_000})
    config = Config.from_env(service_env(redis_server.url, sim_server.url))
    app = create_app(config, redis_client=connect(config.redis_url, 1.0), http=new_session(),
                     clock=FixedClock(T0))
    yield app
    redis_server.client().flushdb()


@pytest.fixture(scope="module")
def fuzz_runs(fuzz_app: falcon.App[falcon.Request, falcon.Response]
              ) -> dict[str, ActionRun]:
    """Every action fuzzed once for the whole module; what each check found, per action."""
    client = falcon.testing.TestClient(fuzz_app)
    callback_ids = []
    for number in ("+1 415 555 2671", "(212) 555-0199"):
        created = client.simulate_post("/v1/actions/create-callback", headers=AUTH,
                                       json=create_body(customerNumber=number)).json
        callback_ids.append(created["callbackId"])
    consent = client.simulate_post("/v1/actions/record-consent", headers=AUTH, json={
        "customerNumber": "+1 305 555 0123", "consentSource": "IVR_KEYPRESS"}).json
    seeds = _seeds(callback_ids, [consent["consentId"]])

    config = schemathesis.Config.from_dict(
        {"auth": {"basic": {"username": BASIC_USER, "password": BASIC_PASSWORD}}})
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app, config=config,
                                           headers=AUTH)
    runs: dict[str, ActionRun] = {}
    deadline = time.monotonic() + TIME_BUDGET_S
    traces = _Tracebacks()
    logging.getLogger().addHandler(traces)
    try:
        # Cancel and revoke end callbacks, so they come last: the others find them pending.
        operations = sorted((r.ok() for r in schema.get_all_operations()),
                            key=lambda op: op.path.endswith(("/cancel-callback",
                                                             "/revoke-consent")))
        for operation in operations:
            action = operation.path.rsplit("/", 1)[-1]
            runs[action] = ActionRun()
            _run_action(operation, seeds, runs[action], deadline, traces)
    finally:
        logging.getLogger().removeHandler(traces)
    return runs


def _bug(check: str, action: str) -> Any:
    reason = KNOWN_BUGS.get((check, action))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(action, marks=marks, id=action)


def _assert_clean(runs: dict[str, ActionRun], check: str, action: str) -> None:
    assert action in runs, f"/openapi.json does not describe {action}"
    found = runs[action].failures.get(check, [])
    assert not found, f"{check} failed for {action}:\n" + "\n".join(f.describe() for f in found)


def test_fuzzing_covers_every_action_with_at_least_1000_cases(fuzz_runs: dict[str, ActionRun]
                                                             ) -> None:
    """Each action of /openapi.json got generated cases, at least 1000 in all."""
    assert set(fuzz_runs) == set(ACTIONS)
    assert all(run.cases >= POSITIVE_CASES for run in fuzz_runs.values()), \
        {a: r.cases for a, r in fuzz_runs.items()}
    assert sum(run.cases for run in fuzz_runs.values()) >= MIN_TOTAL_CASES


def test_fuzzing_reaches_past_the_contract(fuzz_runs: dict[str, ActionRun]) -> None:
    """Generated cases reach the business rules: every action answered 200s, and
    create-callback both created callbacks and refused them for a business reason."""
    assert all(run.statuses[200] > 0 for run in fuzz_runs.values()), \
        {a: dict(r.statuses) for a, r in fuzz_runs.items()}
    created = fuzz_runs["create-callback"].outcomes
    assert created["CREATED OK"] > 0, created
    assert sum(n for k, n in created.items() if k.startswith("REJECTED")) > 0, created


@pytest.mark.parametrize("action", [_bug("not_a_server_error", a) for a in ACTIONS])
def test_no_generated_request_gets_a_server_error(fuzz_runs: dict[str, ActionRun],
                                                  action: str) -> None:
    """No generated body, valid or not, makes the service answer 5xx."""
    _assert_clean(fuzz_runs, "not_a_server_error", action)


@pytest.mark.parametrize("action", [_bug("status_code_conformance", a) for a in ACTIONS])
def test_every_status_code_answered_is_documented(fuzz_runs: dict[str, ActionRun],
                                                  action: str) -> None:
    """Every status the service answered is one /openapi.json lists for the route."""
    _assert_clean(fuzz_runs, "status_code_conformance", action)


@pytest.mark.parametrize("action", [_bug("content_type_conformance", a) for a in ACTIONS])
def test_every_answer_has_the_documented_content_type(fuzz_runs: dict[str, ActionRun],
                                                      action: str) -> None:
    """Every answer is application/json, as documented."""
    _assert_clean(fuzz_runs, "content_type_conformance", action)


@pytest.mark.parametrize("action", [_bug("response_schema_conformance", a) for a in ACTIONS])
def test_every_answer_conforms_to_its_schema(fuzz_runs: dict[str, ActionRun],
                                             action: str) -> None:
    """Every 200 matches the action's output schema and every error the Error schema."""
    _assert_clean(fuzz_runs, "response_schema_conformance", action)


@pytest.mark.parametrize("action", [_bug("ignored_auth", a) for a in ACTIONS])
def test_generated_requests_without_credentials_are_refused(fuzz_runs: dict[str, ActionRun],
                                                            action: str) -> None:
    """Replayed without credentials or with wrong ones, an accepted request is a 401."""
    _assert_clean(fuzz_runs, "ignored_auth", action)


def _openapi_routes(client: falcon.testing.TestClient) -> list[tuple[str, str]]:
    document = client.simulate_get("/openapi.json", headers=AUTH).json
    routes = [(method.upper(), path) for path, item in document["paths"].items()
              for method in item]
    return [*routes, ("GET", "/openapi.json")]


def test_every_documented_route_refuses_missing_credentials(
        fuzz_app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Every path in /openapi.json (and the document itself) is 401 without credentials."""
    client = falcon.testing.TestClient(fuzz_app)
    routes = _openapi_routes(client)
    assert len(routes) == len(ACTIONS) + 1
    answers = {f"{method} {path}": client.simulate_request(
        method, path, json=create_body()).status_code for method, path in routes}
    assert set(answers.values()) == {401}, answers


def test_every_documented_route_refuses_wrong_credentials(
        fuzz_app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Every path in /openapi.json is 401 with a wrong password or a wrong API key."""
    client = falcon.testing.TestClient(fuzz_app)
    wrong = [{"Authorization": "Basic " + base64.b64encode(
        f"{BASIC_USER}:{BASIC_PASSWORD}x".encode()).decode()}, {"X-API-Key": API_KEY + "x"}]
    answers = {f"{method} {path} {sorted(headers)[0]}": client.simulate_request(
        method, path, json=create_body(), headers=headers).status_code
        for method, path in _openapi_routes(client) for headers in wrong}
    assert set(answers.values()) == {401}, answers
