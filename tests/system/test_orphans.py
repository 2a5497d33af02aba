"""The orphan sweep (SPEC §4 Worker): a callback Genesys holds with one of our request
tokens that the ledger does not own is disconnected, so a number never has two. One token
whose search Genesys refuses must not keep the sweep from the others."""

from __future__ import annotations

import uuid
from datetime import timedelta

from middleware.app import Services
from middleware.deadline import Deadline
from middleware.ledger.lifecycle import epoch_ms
from middleware.rules.number import NumberKeys
from middleware.worker.orphans import OrphanSweep
from tests.conftest import DEMO_AGENT, DEMO_QUEUE, RedisServer, Service, Simulator, when
from tests.system.test_lifecycle import NUMBER, live, worker

ANALYTICS = "/api/v2/analytics/conversations/details/query"
OTHER = "+12125550199"


def _landed_unowned(services: Services, e164: str) -> str:
    """A callback in Genesys carrying a request token the ledger has no record of (a create
    that landed after we gave up on it), watched by the sweep; its token."""
    token = uuid.uuid4().hex
    services.genesys.create_callback({
        "routingData": {"queueId": DEMO_QUEUE,
                        "scoredAgents": [{"agent": {"id": DEMO_AGENT}, "score": 100}],
                        "routingFlags": ["AGENT_OWNED_CALLBACK"]},
        "callbackNumbers": [e164], "callbackScheduledTime": when("2026-11-23T19:00:00.000Z"),
        "validateCallbackNumbers": True, "data": {"requestToken": token},
    }, Deadline(5))
    services.lifecycle.watch_late_create(
        token, e164, epoch_ms(services.clock.now() - timedelta(minutes=1)))
    return token


def test_a_refused_token_search_does_not_stop_the_sweep_of_the_others(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Two landed, unowned callbacks, for numbers of two shards, each watched. Genesys
    refuses (400) the first token search of the round. Before the fix the refusal ended
    the round at the first shard's token, which comes first again every round until its
    watch ends, so the other shard's orphan stayed live for the whole watch. Now the
    refused token is kept and searched again next round, and the rest are swept."""
    assert NumberKeys.shard(NUMBER) < NumberKeys.shard(OTHER)
    services = worker(service, redis_server)
    _landed_unowned(services, NUMBER)
    _landed_unowned(services, OTHER)
    assert len(live(sim)) == 2
    sweep = OrphanSweep(services.store, services.genesys, services.lifecycle, services.clock,
                        100)
    sim.control("PUT", "faults", {"status": 400, "count": 1, "pathPrefix": ANALYTICS})
    assert sweep.run(Deadline(10)) == 1
    still = live(sim)
    assert len(still) == 1 and NUMBER in str(still[0]["callbackNumbers"]), still
    # The refused token is still watched: the next round disconnects its callback too.
    assert sweep.run(Deadline(10)) == 1
    assert live(sim) == []


def test_a_refused_permission_stops_the_round_instead_of_spending_the_budget(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A 403 on the token search (the OAuth client lacks the analytics permission) would
    refuse every search alike: the round stops at the first instead of spending one call of
    the shared Genesys budget per watched token, and the sweep goes on once it is fixed."""
    services = worker(service, redis_server)
    _landed_unowned(services, NUMBER)
    _landed_unowned(services, OTHER)
    sweep = OrphanSweep(services.store, services.genesys, services.lifecycle, services.clock,
                        100)
    before = sim.stats()["requests"].get(f"POST {ANALYTICS}", 0)
    sim.control("PUT", "faults", {"status": 403, "count": 10, "pathPrefix": ANALYTICS})
    assert sweep.run(Deadline(10)) == 0
    assert sim.stats()["requests"].get(f"POST {ANALYTICS}", 0) - before == 1
    sim.control("DELETE", "faults")
    assert sweep.run(Deadline(10)) == 2
    assert live(sim) == []
