"""Redis Cluster (SPEC §5): the three-primary rig is a real cluster that refuses what a
cluster refuses, and the product runs on it.

Every test here runs on this module's own cluster, whatever ``TEST_REDIS`` says: the
module's ``redis_server`` shadows the session's, so ``redis_client``, ``make_service`` and
``service`` all point at it. The product tests carry the ``cluster`` marker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from middleware.__main__ import run as main_run
from middleware.clock import FixedClock
from tests.conftest import (
    AUTH,
    T0,
    RedisClusterServer,
    Service,
    Simulator,
    assert_no_numbers,
    create_body,
    restart_redis,
    serve_checked,
    service_env,
    start_cluster,
    start_gunicorn,
)
from tests.redisservers import SLOTS


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """Three primaries on loopback for this module; key names checked at the end."""
    yield from serve_checked(start_cluster(tmp_path_factory.mktemp("cluster")))


def tags_by_node(cluster: RedisClusterServer) -> dict[int, list[str]]:
    """Hash tags (``{t0}``, ``{t1}``…) grouped by the port of the node owning their slot,
    until every node owns two tags of different slots."""
    client = cluster.client()
    found: dict[int, list[str]] = {port: [] for port in cluster.ports()}
    for index in range(1000):
        tag = f"t{index}"
        node = client.get_node_from_key(f"{{{tag}}}")
        if len(found[node.port]) < 2:
            found[node.port].append(tag)
        if all(len(tags) == 2 for tags in found.values()):
            return found
    raise AssertionError(f"1000 tags did not cover every node twice: {found}")


def node_client(cluster: RedisClusterServer, port: int) -> redis.Redis:
    """A plain client on one node: no redirections, so the node's own answer is seen."""
    return next(node.client() for node in cluster.nodes if node.port == port)


# -- the rig ---------------------------------------------------------------------------


def test_every_node_reports_a_healthy_cluster_of_three_primaries(
        redis_server: RedisClusterServer) -> None:
    """Each node says cluster_state:ok with all 16384 slots, and three masters share them."""
    assert redis_server.mode == "cluster"
    for node in redis_server.nodes:
        info = node.info()
        assert (info["cluster_state"], info["cluster_slots_assigned"],
                info["cluster_known_nodes"], info["cluster_size"]) == (
            "ok", str(SLOTS), "3", "3"), info
    masters = redis_server.client().get_primaries()
    assert sorted(m.port for m in masters) == sorted(redis_server.ports())
    for primary in redis_server.primaries():
        assert primary.execute_command("ROLE")[0] == "master"


def test_the_url_names_one_node_and_a_cluster_client_accepts_it(
        redis_server: RedisClusterServer, redis_client: redis.RedisCluster) -> None:
    """``redis://127.0.0.1:<port>/0`` is what REDIS_URL gets: a cluster client built from it
    reaches all three primaries."""
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.nodes[0].port}/0"
    from_url = redis.RedisCluster.from_url(redis_server.url, decode_responses=True)
    try:
        assert len(from_url.get_primaries()) == 3
        from_url.set("{t}probe", "1")
        assert redis_client.get("{t}probe") == "1"
    finally:
        from_url.close()


def test_keys_with_different_hash_tags_land_on_different_nodes(
        redis_server: RedisClusterServer, redis_client: redis.RedisCluster) -> None:
    """One key per node's tag, written through the cluster client, is held by that node
    alone; a scan of every primary sees them all."""
    owners = {tags[0]: port for port, tags in tags_by_node(redis_server).items()}
    for tag in owners:
        redis_client.set(f"{{{tag}}}k", tag)
    for tag, port in owners.items():
        assert list(node_client(redis_server, port).scan_iter(count=100)) == [f"{{{tag}}}k"]
    assert sorted(redis_server.key_names()) == sorted(f"{{{t}}}k" for t in owners)


def test_a_cross_slot_transaction_is_refused_even_on_one_node(
        redis_server: RedisClusterServer, redis_client: redis.RedisCluster) -> None:
    """MULTI over two slots of the same node is refused with CROSSSLOT and writes nothing:
    the keys of one atomic step must share a slot, not merely a node. One slot is fine."""
    port, (first, second) = next(iter(tags_by_node(redis_server).items()))
    node = node_client(redis_server, port)
    crossing = node.pipeline(transaction=True)
    crossing.set(f"{{{first}}}a", "1")
    crossing.set(f"{{{second}}}b", "1")
    # redis-py turns the server's -CROSSSLOT reply into this class.
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        crossing.execute()
    assert list(redis_server.key_names()) == []
    same = node.pipeline(transaction=True)
    same.set(f"{{{first}}}a", "1")
    same.set(f"{{{first}}}b", "1")
    assert same.execute() == [True, True]


def test_a_cross_slot_script_is_refused(
        redis_server: RedisClusterServer, redis_client: redis.RedisCluster) -> None:
    """A Lua script given keys of two slots is refused by the node with CROSSSLOT."""
    port, (first, second) = next(iter(tags_by_node(redis_server).items()))
    script = "redis.call('SET', KEYS[1], '1'); redis.call('SET', KEYS[2], '1'); return 1"
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        node_client(redis_server, port).eval(script, 2, f"{{{first}}}a", f"{{{second}}}b")
    assert list(redis_server.key_names()) == []
    assert redis_client.eval(script, 2, f"{{{first}}}a", f"{{{first}}}b") == 1


def test_an_abrupt_restart_of_every_node_keeps_the_cluster_and_its_data(
        redis_server: RedisClusterServer, redis_client: redis.RedisCluster) -> None:
    """Killed at once and started again on the same ports and directories, the nodes come
    back as the same healthy cluster (nodes.conf) holding every acknowledged write (AOF)."""
    owners = {tags[0] for tags in tags_by_node(redis_server).values()}
    for tag in owners:
        redis_client.set(f"{{{tag}}}durable", tag)
    before = [p.pid for p in redis_server.processes]
    ports = redis_server.ports()
    assert restart_redis(redis_server) is redis_server
    assert redis_server.ports() == ports
    assert not set(before) & {p.pid for p in redis_server.processes}
    for node in redis_server.nodes:
        assert node.info()["cluster_state"] == "ok"
    fresh = redis_server.client()
    try:
        assert {fresh.get(f"{{{tag}}}durable") for tag in owners} == owners
    finally:
        fresh.close()


# -- the product on a cluster ----------------------------------------------------------


def action(service: Service, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one action and return its 200 answer."""
    result = service.action(name, body)
    assert result.status_code == 200, result.text
    return dict(result.json)


@pytest.mark.cluster
def test_create_then_a_second_create_is_a_duplicate(service: Service, sim: Simulator) -> None:
    """On a cluster the first create answers CREATED and the second, for the same number,
    DUPLICATE naming the first; Genesys saw one create."""
    first = action(service, "create-callback", create_body())
    assert (first["outcome"], first["reason"]) == ("CREATED", "OK"), first
    second = action(service, "create-callback", create_body(customerNumber="(415) 555-2671"))
    assert (second["outcome"], second["reason"]) == ("DUPLICATE", "DUPLICATE_PENDING"), second
    assert second["existingCallbackId"] == first["callbackId"]
    assert sim.creates() == 1


@pytest.mark.cluster
def test_find_pending_finds_the_callback(service: Service, sim: Simulator) -> None:
    """find-pending-callbacks on a cluster reports the callback just created."""
    created = action(service, "create-callback", create_body())
    found = action(service, "find-pending-callbacks", {"customerNumber": "+14155552671"})
    assert (found["outcome"], found["pendingCount"]) == ("FOUND", 1), found
    assert found["callbackId"] == created["callbackId"]


@pytest.mark.cluster
def test_cancel_cancels_the_callback(service: Service, sim: Simulator) -> None:
    """cancel-callback on a cluster cancels it, and the number has nothing pending after."""
    created = action(service, "create-callback", create_body())
    cancelled = action(service, "cancel-callback", {"callbackId": created["callbackId"]})
    assert cancelled["outcome"] == "CANCELLED", cancelled
    after = action(service, "find-pending-callbacks", {"customerNumber": "+14155552671"})
    assert after["outcome"] == "NONE", after


@pytest.mark.cluster
def test_worker_once_runs_every_duty_on_a_cluster(
        service: Service, sim: Simulator, redis_server: RedisClusterServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``worker --once`` over a cluster holding a callback runs every duty and exits 0."""
    action(service, "create-callback", create_body())
    capsys.readouterr()
    status = main_run(["worker", "--once"], service_env(redis_server.url, sim.url),
                      FixedClock(T0), own_logging=False)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "failed" not in out and "outbox" in out, out


def redis_mentions(body: Any, word: str) -> bool:
    """Whether a value under some key whose name mentions Redis holds ``word``."""
    if isinstance(body, dict):
        return any(("redis" in str(key).lower() and word in json.dumps(value))
                   or redis_mentions(value, word) for key, value in body.items())
    if isinstance(body, list):
        return any(redis_mentions(item, word) for item in body)
    return False


# How /readyz names the mode is the store's to choose; what is assumed is only that it is
# named, as the text "cluster", somewhere under a key naming Redis (``checks.redis.detail``
# or a ``redisMode`` field would both do).
@pytest.mark.cluster
def test_readyz_is_ready_and_names_the_cluster_mode(service: Service, sim: Simulator) -> None:
    """GET /readyz on a cluster answers 200 and says Redis runs as a cluster."""
    result = service.client.simulate_get("/readyz")
    assert result.status_code == 200, result.text
    assert redis_mentions(result.json, "cluster"), result.json


@pytest.mark.cluster
@pytest.mark.gunicorn
def test_gunicorn_given_one_node_serves_the_cluster(
        redis_client: redis.RedisCluster, redis_server: RedisClusterServer,
        live_sim: Simulator, tmp_path: Path) -> None:
    """Under gunicorn with REDIS_URL naming one node, /readyz names the cluster and a
    create answers CREATED."""
    server = start_gunicorn(service_env(redis_server.url, live_sim.url),
                            tmp_path / "gunicorn.log")
    try:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert redis_mentions(ready.json(), "cluster"), ready.text
        answer = requests.post(f"{server.url}/v1/actions/create-callback", headers=AUTH,
                               json=create_body(requestedTime=None), timeout=10).json()
        assert answer["outcome"] == "CREATED", answer
    finally:
        server.process.terminate()
        server.process.wait(15)
    assert_no_numbers(server.log.read_text(), "gunicorn's log")
