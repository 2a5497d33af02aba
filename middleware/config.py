"""Every setting of the service, the worker and the simulator, read once from the environment.

Nothing else in the package reads ``os.environ``. Each setting is declared once in
``SETTINGS`` (name, default, documentation) and each configuration field is read by one
entry of ``_FIELDS``; ``Config`` (service and worker) extends ``ReadConfig`` (the read-only
commands) with the fields only they need. Every bad value is reported at once, each naming
its variable, data files included. The README's configuration table is checked against
``SETTINGS`` by the test suite.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlsplit

import phonenumbers

from middleware.rules.calling_hours import load_rules
from middleware.rules.profiles import load_profiles

T = TypeVar("T")


class ConfigError(ValueError):
    """Settings are missing or malformed; each problem names its variable."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (``None`` = required or unset) and its meaning."""

    name: str
    default: str | None
    doc: str
    process: str = "web, worker"


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("PORT", "8080", "Port the service listens on (gunicorn binds 0.0.0.0:PORT).", "web"),
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding tokens, claims and ledgers."),
    Setting("REDIS_TIMEOUT_MS", "500", "Connect and read timeout of each Redis command."),
    Setting("GENESYS_REGION", "mypurecloud.com", "Genesys Cloud domain; API at api.<region>."),
    Setting("GENESYS_API_URL", "", "Overrides the API base URL (e.g. the simulator)."),
    Setting("GENESYS_LOGIN_URL", "", "Overrides the OAuth base URL (e.g. the simulator)."),
    Setting("GENESYS_CLIENT_ID", None, "OAuth client-credentials client id (required)."),
    Setting("GENESYS_CLIENT_SECRET", None, "OAuth client-credentials secret (required)."),
    Setting(
        "GENESYS_CONNECT_TIMEOUT_MS", "1000", "Connect timeout of each Genesys call (capped by "
        "the request deadline)."
    ),
    Setting(
        "GENESYS_READ_TIMEOUT_MS", "3000", "Read timeout of each Genesys call (capped by the "
        "request deadline)."
    ),
    Setting(
        "ACTION_BASIC_CREDENTIALS", "", "Accepted Basic credentials, `user:password`, comma "
        "separated (several for rotation).", "web"
    ),
    Setting(
        "ACTION_API_KEYS", "", "Accepted `X-API-Key` values, comma separated. At least one "
        "credential of either kind is required.", "web"
    ),
    Setting(
        "PII_KEYS", None, "Secrets for hashing numbers in Redis keys, comma separated: the "
        "first writes, all are tried on reads (required)."
    ),
    Setting("DEFAULT_COUNTRY", "US", "ISO 3166 alpha-2 region for national-format numbers."),
    Setting(
        "MAX_CALLBACKS_PER_NUMBER_PER_DAY", "3", "Most callbacks accepted for one number in any "
        "24 hours (Florida's limit; also stops callback bombing)."
    ),
    Setting("MIN_LEAD_MINUTES", "5", "Earliest a callback may be scheduled, from now."),
    Setting("MAX_SCHEDULE_DAYS", "30", "Latest a callback may be scheduled, from now."),
    Setting("REQUEST_DEADLINE_MS", "5000", "Every request answers within this budget.", "web"),
    Setting(
        "AGENT_PROFILES_FILE", "", "JSON file with the zone and weekly hours of agents without "
        "WFM, per agent or per team (format in the README)."
    ),
    Setting(
        "CALLING_HOURS_FILE", "", "JSON rules of legal calling hours (default: the shipped "
        "middleware/data/calling_hours.json)."
    ),
    Setting(
        "CALLING_HOURS_POLICY", "enforce", "`enforce` refuses times outside the customer's "
        "calling hours, `warn` adds a warning, `off` skips the rule."
    ),
    Setting(
        "STRICT_OFFSETS", "false", "`true` refuses a requestedTime whose offset matches no "
        "zone involved (TIMEZONE_MISMATCH) instead of warning OFFSET_MISMATCH."
    ),
    Setting(
        "IMMEDIATE_WINDOW_MINUTES", "15", "Callbacks due within this many minutes also need "
        "the owner on queue and online (routing status, presence)."
    ),
    Setting(
        "REASSIGN_FALLBACK", "queue", "When neither a teammate nor the manager can own it: "
        "`queue` (callback without owner) or `reject` (NO_AVAILABLE_OWNER)."
    ),
    Setting(
        "REASSIGN_LOOKAHEAD_MINUTES", "120", "The worker moves callbacks due within this many "
        "minutes away from owners who have become unavailable.", "worker"
    ),
    Setting(
        "CACHE_TTL_SECONDS", "60", "How long Genesys reads (WFM units, shifts, queues, users) "
        "are cached in each process."
    ),
    Setting(
        "DUPLICATE_WINDOW_HOURS", "48", "A pending callback scheduled within this many hours "
        "from now makes a new request for the number a DUPLICATE; idempotency keys live at "
        "least this long."
    ),
    Setting(
        "CONSENT_MAX_AGE_HOURS", "72", "A consent captured longer ago than this is "
        "CONSENT_STALE."
    ),
    Setting(
        "CONSENT_RETENTION_DAYS", "1825", "How long consent records and each number's "
        "evidence history are kept (5 years)."
    ),
    Setting(
        "GENESYS_RATE_LIMIT_PER_MIN", "300", "Genesys API calls per minute this OAuth client "
        "may make (the org's per-client limit); background work stays within a quarter of it."
    ),
    Setting(
        "OUTBOX_INTERVAL_SECONDS", "2", "How often the worker tries to deliver queued "
        "callbacks.", "worker"
    ),
    Setting(
        "OUTBOX_MAX_ATTEMPTS", "10", "Attempts before a queued callback goes to the dead "
        "letters (kept; replay with `python -m middleware dead-letters replay`).", "worker"
    ),
    Setting(
        "OUTBOX_BACKOFF_BASE_MS", "1000", "First retry delay of a queued callback; doubles per "
        "attempt, with full jitter, never sooner than Retry-After.", "worker"
    ),
    Setting(
        "OUTBOX_BACKOFF_CAP_MS", "300000", "Longest retry delay of a queued callback.", "worker"
    ),
    Setting(
        "RECONCILE_INTERVAL_SECONDS", "60", "How often the worker checks pending callbacks "
        "against Genesys.", "worker"
    ),
    Setting(
        "RECONCILE_BATCH_SIZE", "50", "Most a worker duty handles per round: reconciliation's "
        "Genesys requests, lookahead callbacks, outbox entries, index entries trimmed "
        "(further capped by GENESYS_RATE_LIMIT_PER_MIN).", "worker"
    ),
    Setting("LOG_LEVEL", "INFO", "Python log level of the JSON logs."),
    Setting("METRICS_PUBLIC", "false", "`true` serves /metrics without credentials.", "web"),
    Setting(
        "WORKER_METRICS_PORT", "9108", "Port where the worker serves its metrics and the "
        "shared-state gauges (outbox depth and age, dead letters), without credentials: "
        "keep it internal.", "worker"
    ),
    Setting("SIM_PORT", "8090", "Port of the Genesys simulator.", "sim"),
    Setting(
        "SIM_ORG_FILE", "", "Seeded demo org of the simulator (default: the shipped "
        "middleware/sim/demo_org.json).", "sim"
    ),
    Setting(
        "SIM_RATE_LIMIT_PER_MIN", "300", "Simulator token bucket per client; beyond it answers "
        "429 with Retry-After.", "sim"
    ),
    Setting("SIM_TOKEN_TTL_SECONDS", "86399", "Lifetime of tokens the simulator issues.", "sim"),
    Setting(
        "GENESYS_INTEGRATION_NAME", "Callback Middleware", "Name of the Web Services Data "
        "Actions integration that `install-actions` finds or creates and `export-terraform` "
        "declares; its credential is named after it.", "install-actions, export-terraform"
    ),
)

_BY_NAME: Final[dict[str, Setting]] = {s.name: s for s in SETTINGS}
SECRET_SETTINGS: Final = frozenset({"GENESYS_CLIENT_SECRET", "ACTION_BASIC_CREDENTIALS",
                                    "ACTION_API_KEYS", "PII_KEYS"})
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class _Reader:
    """Reads declared settings from one environment mapping, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str:
        setting = _BY_NAME[name]
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if setting.default is None:
            raise ConfigError(f"{name} is required: {setting.doc}")
        return setting.default

    def parse(self, name: str, convert: Callable[[str], T], what: str) -> T:
        text = self.raw(name)
        try:
            return convert(text)
        except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError) as exc:
            # Never echo a credential into a log: name the variable only.
            shown = "(value hidden)" if name in SECRET_SETTINGS else f"={text!r}"
            raise ConfigError(f"{name}{shown} is not {what}") from exc

    def positive_int(self, name: str) -> int:
        value = self.parse(name, int, "an integer")
        if value <= 0:
            raise ConfigError(f"{name}={value} must be greater than zero")
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(name).lower()
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        return value

    def boolean(self, name: str) -> bool:
        return self.choice(name, ("true", "false", "1", "0", "yes", "no")) in ("true", "1", "yes")

    def csv(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.raw(name).split(",") if part.strip())


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(value)
    return value.rstrip("/")


def _basic_pairs(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ValueError("expected user:password")
        pairs.append((user, password))
    return tuple(pairs)


def _region(r: _Reader) -> str:
    region = r.raw("GENESYS_REGION")
    if not re.match(r"^[a-z0-9.-]+\.[a-z]{2,}$", region):
        raise ConfigError(f"GENESYS_REGION={region!r} is not a domain like mypurecloud.com")
    return region


def _base_url(r: _Reader, name: str, host: str) -> str:
    if r.raw(name):
        return r.parse(name, _url, "an http(s) URL")
    return f"https://{host}.{_region(r)}"


def _country(r: _Reader) -> str:
    country = r.raw("DEFAULT_COUNTRY").upper()
    # Alpha-2 shaped is not enough: a region phonenumbers does not know fails every
    # national number at request time.
    if not _COUNTRY.match(country) or country not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"DEFAULT_COUNTRY={country!r} is not an ISO 3166 alpha-2 region "
                          "known to the phone number library")
    return country


def _log_level(r: _Reader) -> str:
    level = r.raw("LOG_LEVEL").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"LOG_LEVEL={level!r} is not DEBUG, INFO, WARNING or ERROR")
    return level


def _redis_url(r: _Reader) -> str:
    redis_url = r.raw("REDIS_URL")
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"REDIS_URL={redis_url!r} is not a redis:// URL")
    try:
        port = urlsplit(redis_url).port
    except ValueError:
        port = 0
    if port == 0:
        # Never echoed: the URL may carry a password.
        raise ConfigError("REDIS_URL has a port that is not a number from 1 to 65535")
    return redis_url


def _pii_keys(r: _Reader) -> tuple[bytes, ...]:
    keys = r.csv("PII_KEYS")
    if not keys:
        raise ConfigError("PII_KEYS (value hidden) names no key: give at least one secret")
    return tuple(k.encode() for k in keys)


def _calling_hours_file(r: _Reader) -> str:
    path = r.raw("CALLING_HOURS_FILE")
    # The loaders the service uses, so what passes here is what start-up then reads.
    try:
        load_rules(Path(path) if path else None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = str(exc).removeprefix(f"{path}: ") if path else str(exc)
        raise ConfigError(f"CALLING_HOURS_FILE={path!r} cannot be used: {detail}") from exc
    return path


def _agent_profiles_file(r: _Reader) -> str:
    path = r.raw("AGENT_PROFILES_FILE")
    try:
        load_profiles(path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # The loader's message starts with the variable's name already: say it once.
        detail = str(exc).removeprefix("AGENT_PROFILES_FILE ").removeprefix(f"{path}: ")
        raise ConfigError(f"AGENT_PROFILES_FILE={path!r} cannot be used: {detail}") from exc
    return path


def _basic(r: _Reader) -> tuple[tuple[str, str], ...]:
    return r.parse("ACTION_BASIC_CREDENTIALS",
                   lambda _: _basic_pairs(r.csv("ACTION_BASIC_CREDENTIALS")),
                   "a comma-separated list of user:password")


def _region_check(r: _Reader) -> None:
    _region(r)


def _some_credential(r: _Reader) -> None:
    if not _basic(r) and not r.csv("ACTION_API_KEYS"):
        raise ConfigError(
            "ACTION_BASIC_CREDENTIALS or ACTION_API_KEYS must name at least one credential: "
            "the service refuses to run open"
        )


def _ms_as_s(name: str) -> Callable[[_Reader], float]:
    return lambda r: r.positive_int(name) / 1000


def _int(name: str) -> Callable[[_Reader], int]:
    return lambda r: r.positive_int(name)


def _port(name: str) -> Callable[[_Reader], int]:
    def read(r: _Reader) -> int:
        value = r.positive_int(name)
        if value > 65535:
            raise ConfigError(f"{name}={value} is not a TCP port (1-65535)")
        return value
    return read


#: How each configuration field is read, defined once for every config class built from it.
_FIELDS: Final[dict[str, Callable[[_Reader], Any]]] = {
    "port": _port("PORT"),
    "redis_url": _redis_url,
    "redis_timeout_s": _ms_as_s("REDIS_TIMEOUT_MS"),
    "genesys_api_url": lambda r: _base_url(r, "GENESYS_API_URL", "api"),
    "genesys_login_url": lambda r: _base_url(r, "GENESYS_LOGIN_URL", "login"),
    "genesys_client_id": lambda r: r.raw("GENESYS_CLIENT_ID"),
    "genesys_client_secret": lambda r: r.raw("GENESYS_CLIENT_SECRET"),
    "genesys_connect_timeout_s": _ms_as_s("GENESYS_CONNECT_TIMEOUT_MS"),
    "genesys_read_timeout_s": _ms_as_s("GENESYS_READ_TIMEOUT_MS"),
    "basic_credentials": _basic,
    "api_keys": lambda r: r.csv("ACTION_API_KEYS"),
    "pii_keys": _pii_keys,
    "default_country": _country,
    "min_lead_minutes": _int("MIN_LEAD_MINUTES"),
    "max_callbacks_per_number_per_day": _int("MAX_CALLBACKS_PER_NUMBER_PER_DAY"),
    "max_schedule_days": _int("MAX_SCHEDULE_DAYS"),
    "request_deadline_s": _ms_as_s("REQUEST_DEADLINE_MS"),
    "agent_profiles_file": _agent_profiles_file,
    "calling_hours_file": _calling_hours_file,
    "calling_hours_policy": lambda r: r.choice("CALLING_HOURS_POLICY",
                                               ("enforce", "warn", "off")),
    "strict_offsets": lambda r: r.boolean("STRICT_OFFSETS"),
    "cache_ttl_s": _int("CACHE_TTL_SECONDS"),
    "immediate_window_minutes": _int("IMMEDIATE_WINDOW_MINUTES"),
    "reassign_fallback": lambda r: r.choice("REASSIGN_FALLBACK", ("queue", "reject")),
    "reassign_lookahead_minutes": _int("REASSIGN_LOOKAHEAD_MINUTES"),
    "duplicate_window_hours": _int("DUPLICATE_WINDOW_HOURS"),
    "consent_max_age_hours": _int("CONSENT_MAX_AGE_HOURS"),
    "consent_retention_days": _int("CONSENT_RETENTION_DAYS"),
    "genesys_rate_limit_per_min": _int("GENESYS_RATE_LIMIT_PER_MIN"),
    "outbox_interval_s": _int("OUTBOX_INTERVAL_SECONDS"),
    "outbox_max_attempts": _int("OUTBOX_MAX_ATTEMPTS"),
    "outbox_backoff_base_ms": _int("OUTBOX_BACKOFF_BASE_MS"),
    "outbox_backoff_cap_ms": _int("OUTBOX_BACKOFF_CAP_MS"),
    "reconcile_interval_s": _int("RECONCILE_INTERVAL_SECONDS"),
    "reconcile_batch_size": _int("RECONCILE_BATCH_SIZE"),
    "log_level": _log_level,
    "metrics_public": lambda r: r.boolean("METRICS_PUBLIC"),
    "worker_metrics_port": _port("WORKER_METRICS_PORT"),
}

_C = TypeVar("_C", bound="ReadConfig")


@dataclass(frozen=True)
class ReadConfig:
    """What the read-only commands need: Redis and the keys numbers are hashed with."""

    redis_url: str
    redis_timeout_s: float
    pii_keys: tuple[bytes, ...] = field(repr=False)
    default_country: str
    log_level: str
    request_deadline_s: float
    max_callbacks_per_number_per_day: int
    duplicate_window_hours: int
    consent_max_age_hours: int
    consent_retention_days: int

    #: Checks across settings that belong to no one field.
    _checks: ClassVar[tuple[Callable[[_Reader], None], ...]] = ()

    @classmethod
    def from_env(cls: type[_C], environ: Mapping[str, str]) -> _C:
        """Parse and check every setting of this class; ``ConfigError`` names every bad one."""
        r = _Reader(environ)
        problems: list[str] = []
        values: dict[str, Any] = {}
        for name in [f.name for f in fields(cls)]:
            try:
                values[name] = _FIELDS[name](r)
            except ConfigError as exc:
                problems.extend(exc.problems)
        for check in cls._checks:
            try:
                check(r)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            # One bad setting can be read by two fields (GENESYS_REGION): say it once.
            raise ConfigError(*dict.fromkeys(problems))
        return cls(**values)


@dataclass(frozen=True)
class Config(ReadConfig):
    """Settings of the service and the worker (see ``SETTINGS`` for each meaning)."""

    port: int
    genesys_api_url: str
    genesys_login_url: str
    genesys_client_id: str
    genesys_client_secret: str = field(repr=False)
    genesys_connect_timeout_s: float
    genesys_read_timeout_s: float
    basic_credentials: tuple[tuple[str, str], ...] = field(repr=False)
    api_keys: tuple[str, ...] = field(repr=False)
    min_lead_minutes: int
    max_schedule_days: int
    agent_profiles_file: str
    calling_hours_file: str
    calling_hours_policy: str
    strict_offsets: bool
    cache_ttl_s: int
    immediate_window_minutes: int
    reassign_fallback: str
    reassign_lookahead_minutes: int
    genesys_rate_limit_per_min: int
    outbox_interval_s: int
    outbox_max_attempts: int
    outbox_backoff_base_ms: int
    outbox_backoff_cap_ms: int
    reconcile_interval_s: int
    reconcile_batch_size: int
    metrics_public: bool
    worker_metrics_port: int = 9108

    _checks: ClassVar[tuple[Callable[[_Reader], None], ...]] = (
        _region_check, _some_credential)


@dataclass(frozen=True)
class SimConfig:
    """Settings of the Genesys simulator process."""

    port: int
    org_file: str
    rate_limit_per_min: int
    token_ttl_s: int
    client_id: str
    client_secret: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimConfig:
        """The simulator accepts the same client credentials the service is configured with."""
        r = _Reader(environ)
        return cls(
            port=r.positive_int("SIM_PORT"),
            org_file=r.raw("SIM_ORG_FILE"),
            rate_limit_per_min=r.positive_int("SIM_RATE_LIMIT_PER_MIN"),
            token_ttl_s=r.positive_int("SIM_TOKEN_TTL_SECONDS"),
            client_id=r.raw("GENESYS_CLIENT_ID"),
            client_secret=r.raw("GENESYS_CLIENT_SECRET"),
        )


#: AWS region of each Genesys Cloud domain, as the ``genesyscloud`` Terraform provider names it.
GENESYS_AWS_REGIONS: Final = {
    "mypurecloud.com": "us-east-1", "use2.us-gov-pure.cloud": "us-east-2",
    "usw2.pure.cloud": "us-west-2", "cac1.pure.cloud": "ca-central-1",
    "sae1.pure.cloud": "sa-east-1", "mypurecloud.ie": "eu-west-1",
    "euw2.pure.cloud": "eu-west-2", "mypurecloud.de": "eu-central-1",
    "euc2.pure.cloud": "eu-central-2", "aps1.pure.cloud": "ap-south-1",
    "apne2.pure.cloud": "ap-northeast-2", "mypurecloud.jp": "ap-northeast-1",
    "apne3.pure.cloud": "ap-northeast-3", "mypurecloud.com.au": "ap-southeast-2",
    "mec1.pure.cloud": "me-central-1",
}


@dataclass(frozen=True)
class SetupConfig:
    """What the set-up commands (``install-actions``, ``export-terraform``) need to know."""

    genesys_region: str
    integration_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SetupConfig:
        """Read the region and integration name; no secret is needed to export."""
        r = _Reader(environ)
        name = r.raw("GENESYS_INTEGRATION_NAME")
        if len(name) > 256 or not name.isprintable():
            raise ConfigError("GENESYS_INTEGRATION_NAME must be printable, at most 256 characters")
        return cls(r.raw("GENESYS_REGION"), name)

    def aws_region(self) -> str:
        """The provider's name for the region; ``ConfigError`` for a domain it does not know."""
        region = GENESYS_AWS_REGIONS.get(self.genesys_region)
        if region is None:
            raise ConfigError(f"GENESYS_REGION={self.genesys_region!r} is not a Genesys Cloud "
                              f"region ({', '.join(sorted(GENESYS_AWS_REGIONS))})")
        return region
