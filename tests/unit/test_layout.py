"""The package layout holds: imports only point down (README "Package layout").

Every ``import`` of ``middleware/`` is read with ``ast`` (imports inside functions too), so
a module moved into the wrong room, or a rule that reaches for Redis, fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "middleware"

#: Leaves every room may import.
SHARED = frozenset({"clock", "errors", "config", "logs", "deadline"})
#: Top-level modules below both web/ and actions/: the contracts and reason catalogue the
#: answers are built with, the request context, and metrics (which import no Redis).
BELOW = frozenset({"contracts", "reasons", "context", "metrics"})

#: The rooms at the bottom may import only themselves, what sits below them, and the leaves.
ALLOWED: dict[str, frozenset[str]] = {
    "rules": frozenset({"rules"}) | SHARED,
    "store": frozenset({"store"}) | SHARED,
    "genesys": frozenset({"genesys", "metrics"}) | SHARED,
    # The pure rules sit below everything that is not pure: the ledger keys a number by
    # the number rule's digests.
    "ledger": frozenset({"ledger", "store", "rules"}) | SHARED,
    "sim": frozenset({"sim"}) | SHARED,
    **{name: SHARED | BELOW for name in BELOW},
}
#: The rooms above them may import anything below, never upwards or sideways.
COMMANDS = frozenset({"app", "wsgi", "__main__", "bulk", "install", "gunicorn_conf"})
FORBIDDEN: dict[str, frozenset[str]] = {
    "actions": frozenset({"web", "worker", "sim"}) | COMMANDS,
    "worker": frozenset({"web", "sim"}) | COMMANDS,
    "web": frozenset({"worker", "sim", "app", "wsgi", "__main__", "bulk"}),
}
#: Third-party clients each confined to one room.
CONFINED: dict[str, frozenset[str]] = {
    "redis": frozenset({"store"}),
    "requests": frozenset({"genesys", "sim"}),
    "falcon": frozenset({"web", "sim", "app"}),
}

#: Top-level modules still waiting for their room. Until one moves it belongs to no room, so
#: its own imports are not checked here (the confined clients still are); the bottom rooms
#: may not import it. Empty: every module has its room.
PENDING_MOVES: frozenset[str] = frozenset()
#: Imports known to point the wrong way, each to be removed by the change that fixes it.
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "middleware":
                yield from (f"middleware.{alias.name}" for alias in node.names)
            else:
                yield node.module


def _room(module: str) -> str:
    """The first name under ``middleware``: a package (room) or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _violations(module: str, imported: str) -> list[str]:
    if (module, imported) in KNOWN_EXCEPTIONS:
        return []
    room = _room(module)
    top = imported.split(".", maxsplit=1)[0]
    if top in CONFINED:
        return [] if room in CONFINED[top] else [f"{module} imports {top}"]
    if top != "middleware" or imported == "middleware":
        return []
    target = _room(imported)
    if target == "__version__" or room in PENDING_MOVES:
        return []
    if room in ALLOWED and target not in ALLOWED[room]:
        return [f"{module} ({room}) imports {imported} ({target})"]
    if target in FORBIDDEN.get(room, frozenset()):
        return [f"{module} ({room}) imports {imported} ({target})"]
    return []


def layout_violations(package: Path = PACKAGE) -> list[str]:
    """Every import of the package that points up or sideways, one line each."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module(path)
        for imported in _imports(path):
            found += _violations(module, imported)
    return found


def test_imports_only_point_down() -> None:
    """No room imports one above or beside it; redis, requests and falcon stay in theirs."""
    assert layout_violations() == []


def test_every_room_is_a_package_and_the_pending_moves_still_exist() -> None:
    """The lists above name real modules, so a finished move shows up as a stale entry."""
    for room in ("rules", "store", "genesys", "ledger", "actions", "web", "worker", "sim"):
        assert (PACKAGE / room / "__init__.py").is_file(), room
    stale = sorted(name for name in PENDING_MOVES | BELOW
                   if not (PACKAGE / f"{name}.py").is_file())
    assert stale == [], f"moved: drop {stale} from the lists in this test"
    for module, imported in KNOWN_EXCEPTIONS:
        path = ROOT / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert imported in set(_imports(source)), f"fixed: drop {module} -> {imported}"


@pytest.mark.parametrize(("module", "imported"), [
    ("middleware.rules.owner", "middleware.store"),
    ("middleware.rules.consent", "middleware.contracts"),
    ("middleware.rules.time", "falcon"),
    ("middleware.genesys.client", "middleware.store"),
    ("middleware.store.window", "middleware.ledger.records"),
    ("middleware.ledger.records", "middleware.genesys.client"),
    ("middleware.worker.loop", "middleware.web.resources"),
    ("middleware.actions.checks", "middleware.web.guard"),
    ("middleware.web.resources", "redis"),
    ("middleware.actions.consent", "requests"),
    ("middleware.contracts", "middleware.actions.consent"),
])
def test_an_import_pointing_up_or_sideways_is_caught(module: str, imported: str) -> None:
    """The checker itself refuses each kind of wrong import."""
    assert _violations(module, imported)


@pytest.mark.parametrize(("module", "imported"), [
    ("middleware.actions.consent", "middleware.rules.consent"),
    ("middleware.web.resources", "middleware.contracts"),
    ("middleware.ledger.lifecycle", "middleware.store"),
    ("middleware.worker.loop", "middleware.actions.checks"),
    ("middleware.rules.number", "middleware.logs"),
])
def test_an_import_pointing_down_passes(module: str, imported: str) -> None:
    """Downward imports are what the layout is for."""
    assert _violations(module, imported) == []
