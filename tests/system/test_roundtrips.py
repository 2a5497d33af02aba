"""The benchmark's round-trip counter counts writes to Redis, whatever each carries."""

from __future__ import annotations

import time

import pytest
import redis

from bench.roundtrips import Tally, counting_client
from tests.conftest import TEST_REDIS, RedisServer

_ECHO = "return ARGV[1]"


def _counted(redis_server: RedisServer) -> tuple[redis.Redis, Tally]:
    tally = Tally()
    client = counting_client(redis_server.url, 5.0, tally)
    client.ping()  # connect (its handshake is not what the tests count)
    tally.reset()
    return client, tally


def test_one_plain_command_is_one_round_trip(redis_server: RedisServer,
                                             redis_client: redis.Redis) -> None:
    """A single SET is one round trip carrying one command."""
    client, tally = _counted(redis_server)
    client.set("rt:plain", "1")
    assert (tally.round_trips, tally.commands) == (1, 1)
    assert tally.labels == {"SET": 1}


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="checks the round-trip counter on one "
                    "standalone connection (the standalone pass runs it)")
def test_a_pipeline_of_five_commands_is_one_round_trip(redis_server: RedisServer,
                                                        redis_client: redis.Redis) -> None:
    """Five commands in one pipeline, and the same five in a transaction, are one write
    each; the transaction's MULTI and EXEC travel with them."""
    client, tally = _counted(redis_server)
    pipe = client.pipeline(transaction=False)
    for i in range(5):
        pipe.set(f"rt:pipe:{i}", i)
    pipe.execute()
    assert (tally.round_trips, tally.commands) == (1, 5)
    tally.reset()
    with client.pipeline(transaction=True) as tx:
        for i in range(5):
            tx.incr(f"rt:tx:{i}")
        tx.execute()
    assert (tally.round_trips, tally.commands) == (1, 7)
    assert list(tally.labels) == ["MULTI…EXEC[7: INCRBY]"]


def test_a_loaded_script_is_one_round_trip_and_noscript_shows_its_fallback(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """A script Redis holds is one EVALSHA; one it lacks costs redis-py's fallback, three
    writes (EVALSHA answered NOSCRIPT, SCRIPT LOAD, EVALSHA)."""
    redis_client.script_flush()
    client, tally = _counted(redis_server)
    echo = client.register_script(_ECHO)
    assert echo(args=["cold"]) == "cold"
    assert tally.round_trips == 3
    assert tally.labels == {"EVALSHA": 2, "SCRIPT LOAD": 1}
    tally.reset()
    assert echo(args=["warm"]) == "warm"
    assert (tally.round_trips, tally.commands) == (1, 1)


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="checks the round-trip counter on one "
                    "standalone connection (the standalone pass runs it)")
def test_a_health_check_ping_is_its_own_round_trip(redis_server: RedisServer,
                                                   redis_client: redis.Redis) -> None:
    """A command on a connection idle past its health-check interval is two writes."""
    client, tally = _counted(redis_server)
    connection = client.connection_pool.get_connection()
    try:
        connection.next_health_check = int(time.monotonic()) - 1
    finally:
        client.connection_pool.release(connection)
    client.get("rt:idle")
    assert tally.round_trips == 2
    assert tally.labels == {"PING": 1, "GET": 1}
