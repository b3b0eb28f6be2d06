"""One owner per object: only the object owner writes the ledger and the dead letter.

The rule of ``docs/architecture.md``, checked on the source: a call of a writing method
on anything named ``ledger`` or ``dead_letter`` outside ``core/owner.py`` fails the test
(the ledger and dead-letter modules themselves define those methods; the worker parent
frees a dead worker's leases, whose owner is gone).
"""

from __future__ import annotations

import ast
from pathlib import Path

import currents_export

LEDGER_WRITES = {"begin", "save_progress", "complete", "fail", "release", "reading"}
DEAD_LETTER_WRITES = {"write", "flush"}
OWNER = "core/owner.py"
# module → the writing methods it may call, and why
ALLOWED = {
    OWNER: LEDGER_WRITES | DEAD_LETTER_WRITES,
    "workers.py": {"release"},  # the parent frees the leases of a worker that died
}
PACKAGE = Path(currents_export.__file__).parent


def _receiver(node: ast.expr) -> str:
    """The last name of the object a method is called on: ``self.ledger`` → ledger."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def writes_outside_owner(root: Path) -> list[str]:
    """Every call that writes the ledger or the dead letter outside the allowed modules,
    as ``module:line receiver.method``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        if module.startswith(("ledger/", "deadletter")):
            continue  # where the methods are defined
        allowed = ALLOWED.get(module, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method, receiver = node.func.attr, _receiver(node.func.value)
            writes = ((receiver.endswith("ledger") and method in LEDGER_WRITES)
                      or (receiver.endswith("dead_letter") and method in DEAD_LETTER_WRITES))
            if writes and method not in allowed:
                found.append(f"{module}:{node.lineno} {receiver}.{method}")
    return found


def test_only_the_owner_writes_the_ledger_and_the_dead_letter() -> None:
    assert writes_outside_owner(PACKAGE) == []


def test_the_owner_does_write_them() -> None:
    """The rule is not vacuous: the owner's module makes exactly these calls."""
    source = (PACKAGE / OWNER).read_text()
    for call in ("ledger.begin(", "ledger.save_progress(", "ledger.complete(",
                 "ledger.fail(", "dead_letter.write(", "dead_letter.flush("):
        assert call in source, call


def test_a_write_from_another_module_is_found(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / OWNER).write_text("def ok(self):\n    self.ledger.complete('x', {})\n")
    (tmp_path / "core" / "reader.py").write_text(
        "def read(self, obj):\n"
        "    self.dead_letter.write(reason='r')\n"
        "    obj.settings.ledger.save_progress('x', 1, {})\n"
        "    self.output.write(b'fine')\n")
    (tmp_path / "workers.py").write_text("def f(ledger):\n    ledger.release('x', 'o')\n"
                                         "    ledger.complete('x', {})\n")
    assert writes_outside_owner(tmp_path) == [
        "core/reader.py:2 dead_letter.write",
        "core/reader.py:3 ledger.save_progress",
        "workers.py:3 ledger.complete",
    ]
