"""Command line: ``python -m middleware <command>``.

* ``export-actions --base-url URL --auth basic|apikey [--out DIR]``: write the data action files.
* ``worker``: run the background worker (Procfile ``worker``).
* ``check-config``: parse the environment and report the first bad setting.
* ``consent-evidence --number N [--country CC] [--format table|json]``: one customer's
  consents, revocations and callbacks in time order.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from middleware.app import build_duties, build_services
from middleware.clock import SystemClock
from middleware.config import Config, ConfigError
from middleware.contracts import load_contracts
from middleware.evidence import render_evidence
from middleware.export import export_actions
from middleware.genesys import new_session
from middleware.logs import configure_logging
from middleware.numbers import normalise
from middleware.store import connect
from middleware.worker import run_worker

DATA_ACTIONS_DIR = Path(__file__).resolve().parent.parent / "data_actions"


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the process's."""
    parser = argparse.ArgumentParser(prog="python -m middleware")
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
    return run_worker(build_duties(services))


if __name__ == "__main__":
    sys.exit(main())
