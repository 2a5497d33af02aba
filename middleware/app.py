"""The composition root: the one place that builds every collaborator and wires the routes.

``build_services`` makes the domain objects from the configuration and the three outside
collaborators (Redis, the HTTP session, the clock); ``create_app`` (the web process) and
``build_duties`` (the worker) both start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import falcon

from middleware import __version__
from middleware.actions.checks import OwnerRule, OwnerService, TimeService
from middleware.actions.consent import ConsentLedger, ConsentService
from middleware.actions.create import CreateCallback
from middleware.actions.idempotency import IdempotencyGate
from middleware.actions.manage import ManageCallbacks
from middleware.clock import Clock
from middleware.config import Config, ReadConfig
from middleware.contracts import Contract, load_contracts, openapi_document
from middleware.deadline import Deadline
from middleware.errors import StoreUnavailable
from middleware.genesys.client import GenesysClient, GenesysSettings, HttpSession
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.metrics import Metrics, OutboxStats
from middleware.rules.calling_hours import load_rules
from middleware.rules.number import NumberKeys
from middleware.rules.profiles import load_profiles
from middleware.rules.time import TimePolicy
from middleware.store import RedisClient, Store
from middleware.web.guard import OPEN_ROUTES, Authenticator, RequestGuard
from middleware.web.health import Readiness
from middleware.web.resources import (
    ActionResource,
    HealthResource,
    MetricsResource,
    OpenApiResource,
    ReadyResource,
    install_error_handlers,
    unknown_route,
)
from middleware.worker.loop import Duty
from middleware.worker.orphans import OrphanSweep
from middleware.worker.outbox import OutboxDelivery, RetryPolicy
from middleware.worker.reassign import Reassigner
from middleware.worker.reconcile import Reconciler, page_size
from middleware.worker.trim import IndexTrim

# A claim or in-flight key outlives its request by this much, so a slow request keeps it.
_LEASE_SLACK = timedelta(seconds=5)


@dataclass(frozen=True)
class Services:
    """Every domain collaborator, built once per process."""

    config: Config
    contracts: dict[str, Contract]
    store: Store
    genesys: GenesysClient
    lifecycle: Lifecycle
    consents: ConsentLedger
    times: TimeService
    owner: OwnerRule
    create: CreateCallback
    callbacks: ManageCallbacks
    consent_actions: ConsentService
    clock: Clock
    metrics: Metrics


@dataclass(frozen=True)
class ReadServices:
    """What the commands that need no Genesys or action credentials work with."""

    config: ReadConfig
    store: Store
    lifecycle: Lifecycle
    consents: ConsentLedger
    clock: Clock


def _ledgers(config: ReadConfig, store: Store, clock: Clock
             ) -> tuple[Lifecycle, ConsentLedger]:
    """The number-keyed ledgers, built the same way for the service and the commands."""
    lease = timedelta(seconds=config.request_deadline_s) + _LEASE_SLACK
    retention = timedelta(days=config.consent_retention_days)
    keys = NumberKeys(config.pii_keys)
    lifecycle = Lifecycle(store, keys, timedelta(hours=config.duplicate_window_hours), lease,
                          clock, retention, config.max_callbacks_per_number_per_day)
    consents = ConsentLedger(store, keys, clock, timedelta(hours=config.consent_max_age_hours),
                             retention)
    return lifecycle, consents


def build_read_services(config: ReadConfig, *, redis_client: RedisClient,
                        clock: Clock) -> ReadServices:
    """Build only Redis and its ledgers: no Genesys client, no contracts, no credentials."""
    store = Store(redis_client)
    lifecycle, consents = _ledgers(config, store, clock)
    return ReadServices(config, store, lifecycle, consents, clock)


def build_services(config: Config, *, redis_client: RedisClient, http: HttpSession,
                   clock: Clock) -> Services:
    """Build the domain objects; no connection is opened until first use."""
    store = Store(redis_client)
    contracts = load_contracts()
    metrics = Metrics({action: contract.output_schema["properties"]["outcome"]["enum"]
                       for action, contract in contracts.items()})
    genesys = GenesysClient(GenesysSettings(
        api_url=config.genesys_api_url,
        login_url=config.genesys_login_url,
        client_id=config.genesys_client_id,
        client_secret=config.genesys_client_secret,
        connect_timeout_s=config.genesys_connect_timeout_s,
        read_timeout_s=config.genesys_read_timeout_s,
        rate_limit_per_min=config.genesys_rate_limit_per_min,
    ), store, http, clock, cache_ttl_s=config.cache_ttl_s, metrics=metrics)
    lease = timedelta(seconds=config.request_deadline_s) + _LEASE_SLACK
    window_length = timedelta(hours=config.duplicate_window_hours)
    lifecycle, consents = _ledgers(config, store, clock)
    times = TimeService(
        genesys, load_profiles(config.agent_profiles_file),
        load_rules(Path(config.calling_hours_file) if config.calling_hours_file else None),
        TimePolicy(timedelta(minutes=config.min_lead_minutes),
                   timedelta(days=config.max_schedule_days), config.calling_hours_policy,
                   config.strict_offsets),
        contract=contracts["validate-callback-time"], default_country=config.default_country,
        clock=clock)
    owner = OwnerRule(genesys, times, store,
                      timedelta(minutes=config.immediate_window_minutes),
                      config.reassign_fallback, clock)
    journal_lease_ms = int((lease + timedelta(seconds=config.genesys_read_timeout_s))
                           .total_seconds() * 1000)
    settle_s = 2 * config.genesys_read_timeout_s
    create = CreateCallback(
        config.default_country, contracts["create-callback"], genesys, lifecycle,
        IdempotencyGate(store, lease_ms=int(lease.total_seconds() * 1000),
                        keep_s=int((window_length + timedelta(days=1)).total_seconds())),
        consents, times, owner, clock, journal_lease_ms=journal_lease_ms, settle_s=settle_s)
    callbacks = ManageCallbacks(config.default_country, contracts, genesys, lifecycle, times,
                                owner, clock, create.undo, journal_lease_ms=journal_lease_ms,
                                settle_s=settle_s)
    consent_actions = ConsentService(consents, lifecycle, callbacks.revoke_record,
                                     callbacks.finish_disconnect, contracts,
                                     config.default_country, clock)
    return Services(config, contracts, store, genesys, lifecycle, consents, times, owner,
                    create, callbacks, consent_actions, clock, metrics)


def build_duties(services: Services) -> list[Duty]:
    """The worker's periodic duties."""
    config = services.config
    reconciler = Reconciler(services.store, services.genesys, services.lifecycle, page_size(
        config.reconcile_batch_size, config.reconcile_interval_s,
        config.genesys_rate_limit_per_min), services.clock,
        timedelta(days=config.max_schedule_days))
    reassigner = Reassigner(services.store, services.lifecycle, services.owner,
                            services.callbacks,
                            timedelta(minutes=config.reassign_lookahead_minutes),
                            config.reconcile_batch_size, services.clock)
    outbox = OutboxDelivery(
        services.store, services.genesys, services.lifecycle, services.times,
        RetryPolicy(config.outbox_max_attempts,
                    timedelta(milliseconds=config.outbox_backoff_base_ms),
                    timedelta(milliseconds=config.outbox_backoff_cap_ms),
                    settle=timedelta(seconds=2 * config.genesys_read_timeout_s)),
        config.reconcile_batch_size, services.clock, services.create.undo)
    sweep = OrphanSweep(services.store, services.genesys, services.lifecycle, services.clock,
                        config.reconcile_batch_size)

    def reconcile(deadline: Deadline) -> int:
        return reconciler.run(deadline) + sweep.run(deadline)

    return [Duty("outbox", config.outbox_interval_s, outbox.run),
            Duty("reconcile", config.reconcile_interval_s, reconcile),
            Duty("reassign", config.reconcile_interval_s, reassigner.run),
            Duty("trim", config.reconcile_interval_s,
                 IndexTrim(services.lifecycle, config.reconcile_batch_size).run)]


def outbox_stats(services: Services) -> OutboxStats:
    """What the worker's shared-state gauges read at each scrape (``None`` if Redis fails)."""
    def read() -> tuple[int, float, int] | None:
        try:
            depth, age_ms, dead = services.store.outbox_stats(epoch_ms(services.clock.now()))
        except StoreUnavailable:
            return None
        return depth, age_ms / 1000, dead
    return read


def create_app(config: Config, *, redis_client: RedisClient, http: HttpSession,
               clock: Clock) -> falcon.App[falcon.Request, falcon.Response]:
    """Build the WSGI app from its configuration and its three outside collaborators."""
    services = build_services(config, redis_client=redis_client, http=http, clock=clock)
    contracts, callbacks, consent = services.contracts, services.callbacks, \
        services.consent_actions
    open_routes = OPEN_ROUTES | ({"/metrics"} if config.metrics_public else set())
    app = falcon.App(middleware=[RequestGuard(
        Authenticator(config.basic_credentials, config.api_keys), config.request_deadline_s,
        services.metrics, frozenset(open_routes))])
    install_error_handlers(app)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(Readiness(services.store, services.genesys)))
    app.add_route("/openapi.json", OpenApiResource(openapi_document(contracts, __version__)))
    app.add_route("/metrics", MetricsResource(services.metrics.render))
    for action, handler in (("create-callback", services.create.create),
                            ("find-pending-callbacks", callbacks.find_pending),
                            ("cancel-callback", callbacks.cancel),
                            ("validate-callback-time", services.times.validate),
                            ("reschedule-callback", callbacks.reschedule),
                            ("resolve-callback-owner", OwnerService(
                                services.owner, contracts["resolve-callback-owner"],
                                clock).resolve_owner),
                            ("record-consent", consent.record_consent),
                            ("revoke-consent", consent.revoke_consent)):
        app.add_route(f"/v1/actions/{action}", ActionResource(contracts[action], handler))
    app.add_sink(unknown_route, prefix="/")
    return app
