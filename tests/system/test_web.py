"""The HTTP edge: authentication on every route, the error body, health, OpenAPI, codes."""

from __future__ import annotations

import re

import pytest

from middleware.reasons import REASONS, WARNINGS
from tests.conftest import (
    API_KEY,
    API_KEY_2,
    BASIC_PASSWORD_2,
    BASIC_USER_2,
    ROOT,
    Service,
    basic_header,
    free_port,
)

PROTECTED = [("POST", "/v1/actions/create-callback"), ("GET", "/openapi.json"),
             ("GET", "/no/such/route")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_credentials_is_401_everywhere(service: Service, method: str, path: str) -> None:
    """Every route except the health checks refuses a caller without credentials."""
    result = service.client.simulate_request(method, path, json={})
    assert result.status_code == 401
    assert set(result.json) == {"title", "description", "requestId"}


@pytest.mark.parametrize("headers", [
    basic_header("genesys", "wrong"), basic_header("nobody", "basic-secret-one"),
    {"Authorization": "Basic !!!not-base64"}, {"Authorization": "Bearer whatever"},
    {"X-API-Key": "wrong-key"}, {"X-API-Key": API_KEY[:-1]},
])
def test_wrong_credentials_are_401(service: Service, headers: dict[str, str]) -> None:
    """Near misses, garbage and other schemes are all refused."""
    assert service.client.simulate_get("/openapi.json", headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [
    basic_header(), basic_header(BASIC_USER_2, BASIC_PASSWORD_2),
    {"X-API-Key": API_KEY}, {"X-API-Key": API_KEY_2},
])
def test_each_valid_credential_is_accepted(service: Service, headers: dict[str, str]) -> None:
    """Both Basic credentials and both API keys are valid at once (rotation)."""
    assert service.client.simulate_get("/openapi.json", headers=headers).status_code == 200


def test_health_is_open(service: Service) -> None:
    """/healthz needs no credentials."""
    assert service.client.simulate_get("/healthz").json == {"status": "ok"}


def test_ready_reports_each_check(service: Service) -> None:
    """/readyz checks Redis, its durability settings and a Genesys token, by name."""
    result = service.client.simulate_get("/readyz")
    assert result.status_code == 200, result.json
    assert {k: v["ok"] for k, v in result.json["checks"].items()} == {
        "redis": True, "redisDurability": True, "redisLayout": True, "genesys": True}
    assert result.json["checks"]["redis"]["mode"] in ("standalone", "cluster")


def test_ready_names_redis_when_redis_is_down(make_service) -> None:  # type: ignore[no-untyped-def]
    """With Redis unreachable every Redis check fails, and the Genesys check says it was not
    made because of Redis rather than blaming Genesys."""
    service = make_service(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = service.client.simulate_get("/readyz")
    assert result.status_code == 503
    checks = result.json["checks"]
    assert (checks["redis"]["ok"], checks["redis"]["mode"]) == (False, "unknown")
    assert "Redis" in checks["genesys"]["detail"] and "not checked" in checks["genesys"]["detail"]


def test_ready_fails_naming_keys_of_the_layout_before_shards(service: Service) -> None:
    """Shared indexes written by a release without shards are not read: not ready, and
    says which keys and where to read about upgrading."""
    service.redis.zadd("cbm:pending", {"old-callback": 1})
    result = service.client.simulate_get("/readyz")
    assert result.status_code == 503
    assert "cbm:pending" in result.json["checks"]["redisLayout"]["detail"]


def test_ready_fails_naming_durability_when_aof_is_off(service: Service) -> None:
    """With appendfsync everysec an accepted request could be lost: not ready, and says why."""
    service.redis.config_set("appendfsync", "everysec")
    try:
        result = service.client.simulate_get("/readyz")
    finally:
        service.redis.config_set("appendfsync", "always")
    assert result.status_code == 503
    # On a cluster the test's CONFIG SET reaches one primary: the check names its value.
    assert re.search(r"appendfsync=[a-z/]*everysec",
                     result.json["checks"]["redisDurability"]["detail"])


def test_ready_fails_when_genesys_refuses_credentials(make_service) -> None:  # type: ignore[no-untyped-def]
    """Wrong Genesys client credentials make the instance not ready."""
    service = make_service(GENESYS_CLIENT_SECRET="wrong-secret")
    result = service.client.simulate_get("/readyz")
    assert result.status_code == 503
    assert result.json["checks"]["genesys"]["ok"] is False


def test_openapi_is_generated_from_schemas(service: Service) -> None:
    """The OpenAPI document carries each action's schemas verbatim."""
    from middleware.contracts import load_contracts
    doc = service.client.simulate_get("/openapi.json", headers={"X-API-Key": API_KEY}).json
    contract = load_contracts()["create-callback"]
    post = doc["paths"]["/v1/actions/create-callback"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == contract.input_schema
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == \
        contract.output_schema


def test_content_length_over_cap_is_413(service: Service) -> None:
    """A declared body over 64 KiB is refused before it is read."""
    result = service.client.simulate_post("/v1/actions/create-callback",
                                          body=b"x" * (64 * 1024 + 1), headers=basic_header())
    assert result.status_code == 413


def test_readme_catalogue_matches_the_codes() -> None:
    """Every reason and warning has its README row, with the retryable column right."""
    readme = (ROOT / "README.md").read_text()
    for code in REASONS.values():
        row = re.search(rf"^\| `{code.code}` \|.*\| (yes|no) \|", readme, re.M)
        assert row, f"README catalogue lacks {code.code}"
        assert (row.group(1) == "yes") == code.retryable, code.code
    for warning in WARNINGS:
        assert f"| `{warning}` |" in readme
