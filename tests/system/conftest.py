"""What the system tests of bulk import and its departures share."""

from __future__ import annotations

import pytest
import redis

from middleware.app import Services, build_services
from middleware.bulk import BulkImporter
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.genesys.client import new_session
from middleware.store import connect
from tests.conftest import T0, RedisServer, Simulator, service_env


@pytest.fixture
def services(sim: Simulator, redis_client: redis.Redis, redis_server: RedisServer
             ) -> Services:
    """The composition root's services on business time T0, with a budget big enough."""
    config = Config.from_env(service_env(redis_server.url, sim.url,
                                         GENESYS_RATE_LIMIT_PER_MIN="100000"))
    return build_services(config, redis_client=connect(config.redis_url, 1.0),
                          http=new_session(), clock=FixedClock(T0))


def importer_for(services: Services) -> BulkImporter:
    """The bulk importer over the create action of these services."""
    return BulkImporter(services.create.create, services.contracts["create-callback"],
                        services.config.default_country, services.config.request_deadline_s)
