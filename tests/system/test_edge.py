"""The strict HTTP edge (SPEC §2): every malformed request is a 4xx in the error body, never 500."""

from __future__ import annotations

import json
from typing import Any

import falcon.testing
import pytest

from tests.conftest import AUTH, Service, create_body

CREATE = "/v1/actions/create-callback"
JSON = {"Content-Type": "application/json"}


def post_raw(service: Service, body: bytes, headers: dict[str, str] | None = None
             ) -> falcon.testing.Result:
    """POST exact bytes to create-callback with valid credentials."""
    return service.client.simulate_post(CREATE, body=body,
                                        headers={**AUTH, **JSON, **(headers or {})})


def assert_error(result: falcon.testing.Result, status: int) -> dict[str, Any]:
    """The answer has the status and exactly the SPEC error body."""
    assert result.status_code == status, result.text
    assert set(result.json) == {"title", "description", "requestId"}
    assert result.json["requestId"] == result.headers["X-Request-Id"]
    return dict(result.json)


def with_field(raw_value: str) -> bytes:
    """A valid create body whose customerName is the given raw JSON text."""
    text = json.dumps(create_body(customerName="PLACEHOLDER"))
    return text.replace('"PLACEHOLDER"', raw_value).encode()


def test_nesting_deeper_than_32_levels_is_400(service: Service) -> None:
    """10,000 nested brackets (20 KB) are refused before the decoder recurses."""
    error = assert_error(post_raw(service, b"[" * 10_000 + b"]" * 10_000), 400)
    assert "32" in error["description"]


def test_nesting_of_exactly_32_levels_is_judged_by_the_schema(service: Service) -> None:
    """The limit is 32: a 32-deep body is parsed, then refused by the schema as not an object."""
    error = assert_error(post_raw(service, b"[" * 32 + b"]" * 32), 400)
    assert "object" in error["description"]


def test_brackets_inside_strings_do_not_count_as_nesting(service: Service) -> None:
    """Depth is structural: a name full of brackets is just a name."""
    result = post_raw(service, with_field(json.dumps("[" * 40 + "{" * 40)))
    assert result.status_code == 200, result.text


def test_duplicate_key_is_400(service: Service) -> None:
    """A key given twice is refused, not resolved in favour of the last one."""
    body = json.dumps(create_body(consentGiven=False))[:-1] + ', "consentGiven": true}'
    error = assert_error(post_raw(service, body.encode()), 400)
    assert "consentGiven" in error["description"]


@pytest.mark.parametrize("raw", [r'"Grace\u0000Customer"', r'"Grace\ud800"', r'"\udc00 x"'],
                         ids=["nul", "lone-high-surrogate", "lone-low-surrogate"])
def test_nul_and_unpaired_surrogates_are_400(service: Service, raw: str) -> None:
    """NUL and unpaired surrogates are refused in any string."""
    error = assert_error(post_raw(service, with_field(raw)), 400)
    assert "customerName" in error["description"]


def test_paired_surrogates_are_accepted(service: Service) -> None:
    """An escaped astral character (a surrogate pair) is ordinary text."""
    assert post_raw(service, with_field(r'"Grace \ud83d\ude00"')).status_code == 200


@pytest.mark.parametrize("value", ["2147483648", "-2147483649", "1" + "0" * 30])
def test_integer_outside_32_bits_is_400(service: Service, value: str) -> None:
    """Genesys holds priority in an int32: larger integers never get that far."""
    body = json.dumps(create_body(priority=1))[:-1].replace('"priority": 1', f'"priority": {value}')
    assert_error(post_raw(service, body.encode() + b"}"), 400)


def test_integer_at_the_32_bit_edge_is_parsed(service: Service) -> None:
    """2^31-1 is a valid integer; whatever the schema says of it, it is not a parse error."""
    text = json.dumps(create_body(priority=1)).replace('"priority": 1', '"priority": 2147483647')
    result = post_raw(service, text.encode())
    assert result.status_code != 500
    if result.status_code == 400:
        assert "32 bits" not in result.json["description"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=utf-16", ""])
def test_body_not_declared_json_is_415(service: Service, content_type: str) -> None:
    """Only application/json (UTF-8) is read; anything else is 415."""
    result = service.client.simulate_post(CREATE, body=json.dumps(create_body()).encode(),
                                          headers={**AUTH, "Content-Type": content_type})
    assert_error(result, 415)


def test_json_with_utf8_charset_is_accepted(service: Service) -> None:
    """The charset parameter, when given, may say UTF-8."""
    result = post_raw(service, json.dumps(create_body()).encode(),
                      {"Content-Type": "application/json; charset=UTF-8"})
    assert result.status_code == 200, result.text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_body_not_in_utf8_is_400(service: Service, encoding: str) -> None:
    """UTF-16 and UTF-32 bodies are refused, not guessed at."""
    error = assert_error(post_raw(service, json.dumps(create_body()).encode(encoding)), 400)
    assert "JSON" in error["description"] or "UTF-8" in error["description"]


def test_nan_and_infinity_are_400(service: Service) -> None:
    """NaN, Infinity and overflowing numbers are not JSON numbers."""
    for raw in ("NaN", "Infinity", "1e999"):
        assert_error(post_raw(service, with_field(raw)), 400)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_on_health_routes_answers_like_get(service: Service, path: str) -> None:
    """Load balancers probe with HEAD: same status as GET, no body."""
    result = service.client.simulate_head(path)
    assert result.status_code == 200
    assert result.content == b""


def test_401_offers_www_authenticate(service: Service) -> None:
    """A 401 names the scheme to answer with."""
    result = service.client.simulate_post(CREATE, json=create_body())
    assert_error(result, 401)
    assert result.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize(("method", "path"), [("GET", CREATE), ("DELETE", CREATE),
                                              ("POST", "/healthz"), ("PUT", "/readyz")])
def test_wrong_method_is_405_with_the_error_body(service: Service, method: str, path: str
                                                 ) -> None:
    """A known route with the wrong method is 405, in the SPEC error body, with Allow."""
    result = service.client.simulate_request(method, path, headers=AUTH)
    assert_error(result, 405)
    assert result.headers["Allow"]
