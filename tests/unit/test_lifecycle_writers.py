"""Only ``ledger/lifecycle.py`` changes a callback's record or its indexes (SPEC §4 Lifecycle:
every change is one guarded transition): no other module calls a store method that writes
them, so every concurrency proof about the transitions covers every writer."""

from __future__ import annotations

import ast
from pathlib import Path

from middleware.store import Store

MIDDLEWARE = Path(__file__).resolve().parents[2] / "middleware"
LIFECYCLE = MIDDLEWARE / "ledger" / "lifecycle.py"

#: The store's methods that write a ledger record, the duplicate window or an index of them.
RECORD_WRITERS = frozenset({
    "commit_callback", "deliver_journaled", "queue_callback", "defer_journaled",
    "dead_letter_callback", "move_callback", "relink_replacement", "mark_cancel_asked",
    "forget_replacement", "close_callback", "replay_dead_letter", "claim_window",
    "release_claim", "uncount_creation", "unindex", "forget_pending", "disconnect_later",
    "disconnected", "watch_orphan", "mark_reschedule_asked", "clear_reschedule_asked",
    "note_queues", "doubt", "settle_doubt", "lock_change", "unlock_change",
    "trim_stale_pending", "trim_owned", "trim_ended_sets", "sweep",
})


def test_the_writers_named_are_the_stores() -> None:
    """The list cannot rot: each name is a method of the store."""
    missing = sorted(name for name in RECORD_WRITERS if not callable(getattr(Store, name, None)))
    assert missing == []


def test_only_the_lifecycle_calls_them() -> None:
    """Outside ``store/`` itself and the lifecycle, no module calls a record writer."""
    found = []
    for path in sorted(MIDDLEWARE.rglob("*.py")):
        if path == LIFECYCLE or MIDDLEWARE / "store" in path.parents \
                or MIDDLEWARE / "sim" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in RECORD_WRITERS \
                    and "store" in _name(node.value).lower():
                found.append(f"{path.relative_to(MIDDLEWARE)}:{node.lineno} {node.attr}")
    assert found == []


def _name(node: ast.expr) -> str:
    """The name a method is called on: ``store`` in ``self._store.x`` or ``services.store.x``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def test_the_lifecycle_names_every_transition() -> None:
    """The transitions of the issue's list are methods of ``Lifecycle``."""
    from middleware.ledger.lifecycle import Lifecycle

    names = ("claim", "release", "claimed", "journal", "deliver", "defer", "abandon", "keep",
             "ask_cancel", "cancel", "close", "reschedule", "move", "unlink", "replace",
             "dead_letter", "replay", "ask_reschedule")
    assert [n for n in names if not callable(getattr(Lifecycle, n, None))] == []
