"""Command line: ``python -m middleware <command>``.

* ``export-actions --base-url URL --auth basic|apikey [--out DIR]``: write the data action files.
* ``worker``: run the background worker (Procfile ``worker``).
* ``check-config``: parse the environment and report the first bad setting.
* ``consent-evidence --number N [--country CC] [--format table|json]``: one customer's
  consents, revocations and callbacks in time order.
* ``dead-letters list`` / ``dead-letters replay (TOKEN ... | --all)``: queued callbacks that
  exhausted their attempts, and putting them back in the outbox.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import redis

from middleware.app import Services, build_duties, build_services, outbox_stats
from middleware.clock import SystemClock
from middleware.config import Config, ConfigError
from middleware.contracts import load_contracts
from middleware.errors import StoreUnavailable
from middleware.evidence import render_evidence
from middleware.export import export_actions
from middleware.genesys import new_session
from middleware.logs import configure_logging
from middleware.metrics import serve_worker_metrics
from middleware.numbers import normalise
from middleware.outbox import replay_dead_letters
from middleware.store import connect
from middleware.worker import run_worker

DATA_ACTIONS_DIR = Path(__file__).resolve().parent.parent / "data_actions"


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the process's."""
    parser = argparse.ArgumentParser(prog=_prog(sys.argv[0]))
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-actions", help="write data_actions/*.custom.json")
    export.add_argument("--base-url", required=True, help="public https URL of this service")
    export.add_argument("--auth", choices=("basic", "apikey"), required=True,
                        help="credential type of the Genesys integration")
    export.add_argument("--out", type=Path, default=DATA_ACTIONS_DIR, help="output folder")
    commands.add_parser("worker", help="run the background worker")
    commands.add_parser("check-config", help="validate the environment and exit")
    evidence = commands.add_parser("consent-evidence",
                                   help="print one customer's consent history")
    evidence.add_argument("--number", required=True, help="the customer number, any format")
    evidence.add_argument("--country", default="", help="ISO 3166 hint for national numbers")
    evidence.add_argument("--format", choices=("table", "json"), default="table")
    dead = commands.add_parser("dead-letters", help="list or replay dead-lettered callbacks")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("tokens", nargs="*", help="entries to replay (see list)")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    args = parser.parse_args(argv)

    if args.command == "export-actions":
        if not args.base_url.startswith(("https://", "http://")):
            parser.error("--base-url must be an http(s) URL")
        for path in export_actions(load_contracts(), args.base_url, args.auth, args.out):
            print(f"wrote {path}")
        return 0
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration ok")
        return 0
    try:
        return _run(args, config)
    except (redis.RedisError, StoreUnavailable, ValueError) as exc:
        # An operator needs the cause in one line (bad REDIS_URL, Redis down), not a traceback.
        print(f"redis error ({config.redis_url.split('@')[-1]}): {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2


def _prog(argv0: str) -> str:
    """How the user called us: ``python -m middleware`` or the installed script's name."""
    name = Path(argv0).name
    return "python -m middleware" if name in ("__main__.py", "") else name


def _run(args: argparse.Namespace, config: Config) -> int:
    configure_logging(config.log_level)
    services = build_services(config,
                              redis_client=connect(config.redis_url, config.redis_timeout_s),
                              http=new_session(), clock=SystemClock())
    if args.command == "consent-evidence":
        number = normalise(args.number, args.country or config.default_country)
        if number is None:
            print("not a valid phone number", file=sys.stderr)
            return 2
        events = services.consents.evidence(number)
        print(render_evidence(number.e164, events, args.format))
        return 0
    if args.command == "dead-letters":
        return _dead_letters(services, args.action, args.tokens, args.all)
    try:
        stop_metrics = serve_worker_metrics(services.metrics, outbox_stats(services),
                                            config.worker_metrics_port)
    except OSError as exc:
        # Delivering callbacks matters more than being scraped: run on, say so loudly.
        logging.getLogger("middleware.worker").error(
            "worker metrics not served", extra={"port": config.worker_metrics_port,
                                                "error": str(exc)})
        stop_metrics = _nothing
    try:
        return run_worker(build_duties(services))
    finally:
        stop_metrics()


def _nothing() -> None:
    """A stop for what was never started."""


def _owner(command: dict[str, Any]) -> str:
    scored = (command.get("routingData") or {}).get("scoredAgents") or [{}]
    return str((scored[0].get("agent") or {}).get("id") or "")


def _dead_letters(services: Services, action: str, tokens: list[str], everything: bool) -> int:
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
    if not chosen:
        print("name the tokens to replay, or --all", file=sys.stderr)
        return 2
    replayed = replay_dead_letters(services.store, services.window, chosen, services.clock)
    print(f"replayed {len(replayed)} of {len(chosen)}")
    return 0 if len(replayed) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
