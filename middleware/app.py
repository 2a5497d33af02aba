"""The composition root: the one place that builds every collaborator and wires the routes."""

from __future__ import annotations

from datetime import timedelta

import falcon
import redis
import requests

from middleware import __version__
from middleware.callbacks import CallbackService, Rules
from middleware.clock import Clock
from middleware.config import Config
from middleware.contracts import load_contracts, openapi_document
from middleware.genesys import GenesysClient, GenesysSettings
from middleware.health import Readiness
from middleware.store import Store
from middleware.web import (
    ActionResource,
    Authenticator,
    HealthResource,
    OpenApiResource,
    ReadyResource,
    RequestGuard,
    install_error_handlers,
    unknown_route,
)


def create_app(config: Config, *, redis_client: redis.Redis, http: requests.Session,
               clock: Clock) -> falcon.App[falcon.Request, falcon.Response]:
    """Build the WSGI app from its configuration and its three outside collaborators."""
    store = Store(redis_client)
    genesys = GenesysClient(GenesysSettings(
        api_url=config.genesys_api_url,
        login_url=config.genesys_login_url,
        client_id=config.genesys_client_id,
        client_secret=config.genesys_client_secret,
        connect_timeout_s=config.genesys_connect_timeout_s,
        read_timeout_s=config.genesys_read_timeout_s,
    ), store, http)
    contracts = load_contracts()
    callbacks = CallbackService(
        Rules(default_country=config.default_country,
              min_lead=timedelta(minutes=config.min_lead_minutes),
              horizon=timedelta(days=config.max_schedule_days)),
        contracts["create-callback"], genesys, store, clock,
    )

    app = falcon.App(middleware=[RequestGuard(
        Authenticator(config.basic_credentials, config.api_keys), config.request_deadline_s)])
    install_error_handlers(app)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(Readiness(store, genesys)))
    app.add_route("/openapi.json", OpenApiResource(openapi_document(contracts, __version__)))
    app.add_route("/v1/actions/create-callback",
                  ActionResource(contracts["create-callback"], callbacks.create))
    app.add_sink(unknown_route, prefix="/")
    return app
