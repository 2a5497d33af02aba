"""Command line: ``python -m middleware <command>``.

* ``export-actions --base-url URL --auth basic|apikey [--secure] [--out DIR]``: write the data
  action files.
* ``worker [--once]``: run the background worker (Procfile ``worker``); ``--once`` runs each
  duty one round and exits.
* ``check-config [--read-only]``: parse the environment (data files included) and report
  every bad setting; ``--read-only`` checks only what the read-only commands need.
* ``consent-evidence --number N [--country CC] [--format table|json]``: one customer's
  consents, revocations and callbacks in time order.
* ``dead-letters list`` / ``dead-letters replay (TOKEN ... | --all)``: queued callbacks that
  exhausted their attempts (needs only ``REDIS_URL`` and ``PII_KEYS``), and putting them
  back in the outbox (checks the worker's settings first).
* ``migrate-keys [--dry-run]``: move the keys of a release before shards into the sharded
  layout (needs only ``REDIS_URL`` and ``PII_KEYS``); ``--dry-run`` writes nothing.
* ``install-actions --base-url URL --auth basic|apikey [--secure] [--dry-run]``: find or
  create the integration, its credential and every action in the org, through the API.
* ``export-terraform --base-url URL --auth basic|apikey [--out DIR]``: write ``terraform/``
  for CX as Code.
* ``import-callbacks FILE.csv [--report OUT.csv] [--dry-run] [--limit N]``: create callbacks
  from a CSV of create-callback inputs, resumable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from middleware.app import (
    ReadServices,
    Services,
    build_duties,
    build_read_services,
    build_services,
    outbox_stats,
)
from middleware.bulk import BulkImporter, CsvFileError, progress_for, render_summary, write_report
from middleware.clock import Clock, SystemClock
from middleware.config import SETTINGS, Config, ConfigError, ReadConfig, SetupConfig
from middleware.contracts import load_contracts
from middleware.errors import StoreUnavailable, UpstreamError
from middleware.evidence import render_evidence
from middleware.genesys.client import new_session
from middleware.genesys.integrations import IntegrationsApi
from middleware.install import REFUSED, Installer, render_steps, secret_for
from middleware.logs import configure_logging
from middleware.metrics import serve_worker_metrics
from middleware.rules.number import NumberKeys, normalise
from middleware.store import RedisError, connect
from middleware.store.migrate import migrate_keys, render_report
from middleware.web.export import export_actions
from middleware.web.terraform import export_terraform
from middleware.worker.loop import run_once, run_worker
from middleware.worker.outbox import replay

#: Relative to where the command runs: the repository root in a checkout.
DATA_ACTIONS_DIR = Path("data_actions")
TERRAFORM_DIR = Path("terraform")

#: What the read-only commands read (``ReadConfig``); the rest of ``SETTINGS`` they ignore.
READ_SETTINGS = ("REDIS_URL", "PII_KEYS", "REDIS_TIMEOUT_MS", "DEFAULT_COUNTRY", "LOG_LEVEL",
                 "REQUEST_DEADLINE_MS", "MAX_CALLBACKS_PER_NUMBER_PER_DAY",
                 "DUPLICATE_WINDOW_HOURS", "CONSENT_MAX_AGE_HOURS", "CONSENT_RETENTION_DAYS")
#: What the service, the worker and the commands built on them require.
REQUIRED_SETTINGS = ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", "PII_KEYS",
                     "ACTION_API_KEYS", "ACTION_BASIC_CREDENTIALS")
_SERVICE_SETTINGS = tuple(s.name for s in SETTINGS
                          if "web" in s.process or "worker" in s.process)
#: migrate-keys' least timeout per Redis command (s).
_MIGRATE_TIMEOUT_S = 30.0
_DEMO_ENV = "source .run/env   # the demo's environment, written by scripts/run"
#: The top-level ``--help`` tail: one call of every command.
_COMMAND_EXAMPLES = """\
examples (each command's --help lists the variables it reads):
  source .run/env   # the demo's environment, written by scripts/run
  python -m middleware check-config
  python -m middleware consent-evidence --number '+1 415 555 2671'
  python -m middleware dead-letters list
  python -m middleware dead-letters replay --all
  python -m middleware migrate-keys --dry-run
  python -m middleware worker --once
  python -m middleware import-callbacks callbacks.csv --report report.csv --dry-run
  python -m middleware export-actions --base-url https://cb.example.com --auth basic
  python -m middleware install-actions --base-url https://cb.example.com --auth apikey --dry-run
  python -m middleware export-terraform --base-url https://cb.example.com --auth basic

read-only commands (consent-evidence, dead-letters list, check-config --read-only) and
migrate-keys need only REDIS_URL and PII_KEYS; the others need the service's settings."""


def _epilog(required: tuple[str, ...], also: tuple[str, ...], *examples: str) -> str:
    """The ``--help`` tail: the variables a command reads and how to call it."""
    docs = {s.name: s for s in SETTINGS}
    lines = ["environment:"]
    for name in required:
        default = docs[name].default
        lines.append(f"  {name}" + (f" (default {default})" if default else ""))
    rest = [n for n in also if n not in required]
    if rest:
        lines.append("  also read, with defaults (see the README's configuration table):")
        line = "   "
        for name in rest:
            if len(line) + len(name) > 76:
                lines.append(line)
                line = "   "
            line += f" {name}"
        lines.append(line)
    lines += ["", "example:"] + [f"  {e}" for e in examples]
    return "\n".join(lines)


def _help(description: str, epilog: str) -> dict[str, Any]:
    return {"help": description, "description": description, "epilog": epilog,
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process, on its environment and the machine's clock."""
    return run(argv, os.environ, SystemClock())


def run(argv: list[str] | None, environ: Mapping[str, str], clock: Clock, *,
        own_logging: bool = True) -> int:
    """Run one command; the exit status is the process's.

    The environment and clock come from the caller (the composition root of a command), so
    a test runs a command on the same business time as the service it inspects, and keeps
    its own log handlers (``own_logging=False``)."""
    parser = argparse.ArgumentParser(
        prog=_prog(sys.argv[0]), description="Commands of the callback middleware.",
        epilog=_COMMAND_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-actions", **_help(
        "write data_actions/*.custom.json", "environment: none\n\nexample:\n"
        "  python -m middleware export-actions --base-url https://cb.example.com --auth basic"))
    export.add_argument("--base-url", required=True, help="public https URL of this service")
    export.add_argument("--auth", choices=("basic", "apikey"), required=True,
                        help="credential type of the Genesys integration")
    export.add_argument("--out", type=Path, default=DATA_ACTIONS_DIR, help="output folder")
    export.add_argument("--secure", action="store_true",
                        help="mark the actions secure (inputs and outputs kept out of logs)")
    worker = commands.add_parser("worker", **_help("run the background worker", _epilog(
        REQUIRED_SETTINGS, _SERVICE_SETTINGS,
        "REDIS_URL=redis://127.0.0.1:6379/0 GENESYS_CLIENT_ID=... GENESYS_CLIENT_SECRET=... \\",
        "  PII_KEYS=... ACTION_API_KEYS=... python -m middleware worker --once")))
    worker.add_argument("--once", action="store_true",
                        help="run every duty once and exit (0 when all ran)")
    check = commands.add_parser("check-config", **_help(
        "validate the environment (data files included), report every problem, exit",
        _epilog(REQUIRED_SETTINGS, _SERVICE_SETTINGS, _DEMO_ENV,
                "python -m middleware check-config",
                "PII_KEYS=... python -m middleware check-config --read-only")))
    check.add_argument("--read-only", action="store_true",
                       help="check only what consent-evidence and dead-letters need")
    evidence = commands.add_parser("consent-evidence", **_help(
        "print one customer's consent history", _epilog(
            ("REDIS_URL", "PII_KEYS"), READ_SETTINGS, _DEMO_ENV,
            "REDIS_URL=redis://127.0.0.1:6379/0 PII_KEYS=... \\",
            "  python -m middleware consent-evidence --number '+1 415 555 0101'")))
    evidence.add_argument("--number", required=True, help="the customer number, any format")
    evidence.add_argument("--country", default="", help="ISO 3166 hint for national numbers")
    evidence.add_argument("--format", choices=("table", "json"), default="table")
    dead = commands.add_parser("dead-letters", **_help(
        "list or replay dead-lettered callbacks", "list reads only REDIS_URL and PII_KEYS; "
        "replay puts callbacks back for the worker,\nso it checks the worker's settings "
        "first (see `worker --help`).\n\n" + _epilog(
            ("REDIS_URL", "PII_KEYS"), READ_SETTINGS, _DEMO_ENV,
            "REDIS_URL=redis://127.0.0.1:6379/0 PII_KEYS=... python -m middleware "
            "dead-letters list", "python -m middleware dead-letters replay --all")))
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("tokens", nargs="*", help="entries to replay (see list)")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    migrate = commands.add_parser("migrate-keys", **_help(
        "move the keys of a release before shards into the sharded layout",
        "Run on the standalone Redis of a release before shards, with that release stopped;\n"
        "safe to run again (an interrupted run resumes). Progress goes to stderr, the\n"
        "summary to stdout.\n\n" + _epilog(
            ("REDIS_URL", "PII_KEYS"), READ_SETTINGS, _DEMO_ENV,
            "REDIS_URL=redis://127.0.0.1:6379/0 PII_KEYS=... \\",
            "  python -m middleware migrate-keys --dry-run")))
    migrate.add_argument("--dry-run", action="store_true",
                         help="read only: print what would move, write nothing")
    _add_setup_commands(commands)
    args = parser.parse_args(argv)

    if args.command in ("export-actions", "export-terraform", "install-actions") and \
            not args.base_url.startswith(("https://", "http://")):
        parser.error("--base-url must be an http(s) URL")
    if args.command == "export-terraform":
        return _export_terraform(args, environ)
    if args.command == "export-actions":
        for path in export_actions(load_contracts(), args.base_url, args.auth, args.out,
                                   secure=args.secure):
            print(f"wrote {path}")
        return 0
    # A replay hands callbacks to the worker: it runs only where the worker could.
    # migrate-keys writes, but only keys; PII_KEYS tells it which number a digest is.
    read_only = args.command in ("consent-evidence", "migrate-keys") or (
        args.command == "dead-letters" and args.action == "list") or (
        args.command == "check-config" and args.read_only)
    try:
        config = (ReadConfig if read_only else Config).from_env(environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration ok")
        return 0
    try:
        if isinstance(config, Config):
            return _run(args, config, environ, clock, own_logging)
        return _run_read_only(args, config, clock, own_logging)
    except (RedisError, StoreUnavailable, ValueError) as exc:
        # An operator needs the cause in one line (bad REDIS_URL, Redis down), not a traceback.
        print(f"redis error ({config.redis_url.split('@')[-1]}): {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2


def _prog(argv0: str) -> str:
    """How the user called us: ``python -m middleware`` or the installed script's name."""
    name = Path(argv0).name
    return "python -m middleware" if name in ("__main__.py", "") else name


def _run(args: argparse.Namespace, config: Config, environ: Mapping[str, str], clock: Clock,
         own_logging: bool) -> int:
    if args.command == "dead-letters":
        # Checked as the worker's, but a replay touches only Redis: build no more than that.
        return _run_read_only(args, config, clock, own_logging)
    if own_logging:
        configure_logging(config.log_level)
    services = build_services(config,
                              redis_client=connect(config.redis_url, config.redis_timeout_s),
                              http=new_session(), clock=clock)
    if args.command == "install-actions":
        return _install_actions(services, args, environ)
    if args.command == "import-callbacks":
        return _import_callbacks(services, args)
    if args.once:
        return run_once(build_duties(services))
    try:
        # It serves without credentials, so only loopback unless metrics are declared public
        # (SPEC §2: /metrics needs credentials unless METRICS_PUBLIC=true).
        host = "0.0.0.0" if config.metrics_public else "127.0.0.1"  # noqa: S104
        stop_metrics = serve_worker_metrics(services.metrics, outbox_stats(services),
                                            config.worker_metrics_port, host)
    except OSError as exc:
        # Delivering callbacks matters more than being scraped: run on, say so loudly.
        logging.getLogger("middleware.worker.loop").error(
            "worker metrics not served", extra={"port": config.worker_metrics_port,
                                                "error": str(exc)})
        stop_metrics = _nothing
    try:
        return run_worker(build_duties(services))
    finally:
        stop_metrics()


def _run_read_only(args: argparse.Namespace, config: ReadConfig, clock: Clock,
                   own_logging: bool) -> int:
    if own_logging:
        configure_logging(config.log_level)
    if args.command == "migrate-keys":
        return _migrate_keys(config, args.dry_run)
    services = build_read_services(
        config, redis_client=connect(config.redis_url, config.redis_timeout_s), clock=clock)
    if args.command == "consent-evidence":
        number = normalise(args.number, args.country or config.default_country)
        if number is None:
            print("not a valid phone number", file=sys.stderr)
            return 2
        events = services.consents.evidence(number)
        print(render_evidence(number.e164, events, args.format))
        return 0
    return _dead_letters(services, args.action, args.tokens, args.all)


def _migrate_keys(config: ReadConfig, dry_run: bool) -> int:
    # A whole index is read in one command: the per-command timeout of a data action is
    # too short for that.
    conn = connect(config.redis_url, max(config.redis_timeout_s, _MIGRATE_TIMEOUT_S))
    numbers = NumberKeys(config.pii_keys)
    report = migrate_keys(conn, numbers.shard, numbers.all, dry_run=dry_run,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    if report is None:
        print("Redis is a cluster: releases before shards never ran on one, nothing to move")
        return 0
    print(render_report(report))
    # Old indexes left mean the service stays not ready: a failure for whoever scripted it.
    return 1 if report.blocking else 0


def _nothing() -> None:
    """A stop for what was never started."""


def _add_setup_commands(commands: Any) -> None:
    install = commands.add_parser("install-actions", **_help(
        "create the integration and actions through the API", _epilog(
            REQUIRED_SETTINGS, (*_SERVICE_SETTINGS, "GENESYS_INTEGRATION_NAME"),
            "GENESYS_REGION=mypurecloud.de GENESYS_CLIENT_ID=... GENESYS_CLIENT_SECRET=... \\",
            "  PII_KEYS=... ACTION_API_KEYS=... python -m middleware install-actions \\",
            "  --base-url https://cb.example.com --auth apikey --dry-run")))
    install.add_argument("--base-url", required=True, help="public https URL of this service")
    install.add_argument("--auth", choices=("basic", "apikey"), required=True,
                         help="credential type of the Genesys integration")
    install.add_argument("--secure", action="store_true",
                         help="mark the actions secure (inputs and outputs kept out of logs)")
    install.add_argument("--dry-run", action="store_true", help="read only; change nothing")
    terraform = commands.add_parser("export-terraform", **_help(
        "write terraform/ for CX as Code", _epilog(
            (), ("GENESYS_REGION", "GENESYS_INTEGRATION_NAME"),
            "GENESYS_REGION=mypurecloud.ie python -m middleware export-terraform \\",
            "  --base-url https://cb.example.com --auth basic")))
    terraform.add_argument("--base-url", required=True, help="public https URL of this service")
    terraform.add_argument("--auth", choices=("basic", "apikey"), required=True,
                           help="credential type of the Genesys integration")
    terraform.add_argument("--out", type=Path, default=TERRAFORM_DIR, help="output folder")
    bulk = commands.add_parser("import-callbacks", **_help(
        "create callbacks from a CSV file", _epilog(
            REQUIRED_SETTINGS, _SERVICE_SETTINGS, _DEMO_ENV,
            "python -m middleware import-callbacks callbacks.csv --report report.csv --dry-run")))
    bulk.add_argument("file", type=Path, help="CSV with a header of create-callback inputs")
    bulk.add_argument("--report", type=Path, help="write the per-row report here (CSV)")
    bulk.add_argument("--dry-run", action="store_true", help="check the rows; create nothing")
    bulk.add_argument("--limit", type=int, help="stop after this many rows (resume later)")


def _export_terraform(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        setup = SetupConfig.from_env(environ)
        region = setup.aws_region()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    for path in export_terraform(load_contracts(), args.base_url, args.auth,
                                 setup.integration_name, region, args.out):
        print(f"wrote {path}")
    return 0


def _install_actions(services: Services, args: argparse.Namespace,
                     environ: Mapping[str, str]) -> int:
    config = services.config
    try:
        setup = SetupConfig.from_env(environ)
        secret = secret_for(args.auth, config.basic_credentials, config.api_keys)
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    installer = Installer(IntegrationsApi(services.genesys), services.contracts,
                          base_url=args.base_url, auth=args.auth, secret=secret,
                          integration_name=setup.integration_name, secure=args.secure,
                          dry_run=args.dry_run)
    try:
        steps = installer.run()
    except UpstreamError as exc:
        print(f"Genesys refused or failed: {exc}", file=sys.stderr)
        return 1
    print(render_steps(steps))
    return 1 if any(s.result == REFUSED for s in steps) else 0


def _import_callbacks(services: Services, args: argparse.Namespace) -> int:
    importer = BulkImporter(services.create.create, services.contracts["create-callback"],
                            services.config.default_country, services.config.request_deadline_s)
    interrupt = threading.Event()

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        # The first Ctrl-C lets the row in flight finish (its create is never left half
        # done); a second one stops at once.
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()
        print("\nimport: stopping after this row (Ctrl-C again to stop now)", file=sys.stderr)

    # Signals can only be taken over from the main thread (a test may run us elsewhere).
    own_signal = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if own_signal else None
    try:
        result = importer.run(args.file.read_text(encoding="utf-8-sig"), dry_run=args.dry_run,
                              limit=args.limit, progress=progress_for,
                              stopping=interrupt.is_set)
    except (OSError, CsvFileError) as exc:
        print(f"cannot import {args.file}: {exc}", file=sys.stderr)
        return 2
    finally:
        if own_signal:
            signal.signal(signal.SIGINT, previous)
    if args.report:
        write_report(args.report, result.rows)
    print(render_summary(result))
    return 130 if result.interrupted else 0


def _owner(command: dict[str, Any]) -> str:
    scored = (command.get("routingData") or {}).get("scoredAgents") or [{}]
    return str((scored[0].get("agent") or {}).get("id") or "")


def _dead_letters(services: ReadServices, action: str, tokens: list[str], everything: bool) -> int:
    letters = services.store.dead_letters()
    if action == "list":
        for entry in letters:
            command = entry.payload.get("command", {})
            print(f"{entry.token}  attempts={entry.attempts}  "
                  f"scheduled={command.get('callbackScheduledTime', '')}  "
                  f"agent={_owner(command) or '-'}  error={entry.error}")
        print(f"{len(letters)} dead letter(s)")
        return 0
    chosen = [e.token for e in letters] if everything else tokens
    if everything and not chosen:
        print("0 dead letter(s): nothing to replay")
        return 0
    if not chosen:
        print("name the tokens to replay, or --all", file=sys.stderr)
        return 2
    done = replay(services.store, services.lifecycle, services.consents, chosen,
                  services.clock)
    for token, reason in done.refused.items():
        print(f"{token}  refused, stays a dead letter: {reason}")
    print(f"replayed {len(done.replayed)} of {len(chosen)}"
          + (f", {len(done.refused)} refused" if done.refused else ""))
    # A refusal is a decision, not a failure; an unknown token is.
    return 0 if len(done.replayed) + len(done.refused) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
