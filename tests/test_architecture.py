"""Rules about the shape of the package that lint-imports does not state.

- No import cycle between modules, counting every import statement anywhere in a module:
  at module level, inside functions, under ``if TYPE_CHECKING:``.
- A short top level: at most ``MAX_TOP_LEVEL_MODULES`` modules directly in
  ``currents_export/`` besides ``__init__.py`` and ``__main__.py``; the rest lives in the
  layer packages.
- ``currents_export.aws_lambda.handler``, the path the stack is deployed with, imports and
  takes Lambda's ``(event, context)``.

Each checker takes a root path (or a dotted path), so the tests below also prove it on
small packages written to ``tmp_path`` that break the rule.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import currents_export

PACKAGE_ROOT = Path(currents_export.__file__).parent
TEMPLATE = Path(__file__).parents[1] / "infra" / "template.yaml"
LAMBDA_HANDLER = "currents_export.aws_lambda.handler"
MAX_TOP_LEVEL_MODULES = 10


# --- the import graph ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    """One import statement of ``importer`` that reaches ``imported`` (a module of ours)."""

    importer: str
    imported: str
    path: Path
    line: int


def modules_of(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package's ``__init__``) for every ``.py`` under ``root``.

    ``root`` is the package directory; its name is the top-level package name.
    """
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def _imported_names(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> Iterator[str]:
    """The dotted names one import statement reaches (before trimming to known modules)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:  # relative: from its package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        up = node.level - 1
        if up > len(package) - 1:
            return  # beyond the top-level package: not ours
        base_parts = package[: len(package) - up]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        # ``from pkg import submodule`` imports the submodule; ``from pkg import name``
        # (or ``*``) imports the package.
        yield candidate if candidate in known else base


def import_edges(root: Path) -> list[Edge]:
    """Every import statement of the package at ``root`` that reaches one of its modules."""
    modules = modules_of(root)
    known = set(modules)
    edges = []
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # every statement, function bodies and TYPE_CHECKING too
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported_names(node, module, is_package, known):
                while name and name not in known:  # import a.b.C or a.b.function → a.b
                    name = name.rpartition(".")[0]
                if name and name != module:
                    edges.append(Edge(module, name, path, node.lineno))
    return edges


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; sizes > 1 only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph[start]))))
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle start → … → start inside one strongly connected component."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")  # cannot happen


def import_cycles(root: Path) -> list[str]:
    """One line per import cycle of the package at ``root``: the modules in order, each
    arrow with the file and line of the import statement that makes it."""
    edges = import_edges(root)
    graph: dict[str, set[str]] = {module: set() for module in modules_of(root)}
    where: dict[tuple[str, str], Edge] = {}
    for edge in edges:
        graph[edge.importer].add(edge.imported)
        where.setdefault((edge.importer, edge.imported), edge)
    reports = []
    for component in _strongly_connected(graph):
        cycle = _cycle_through(component[0], set(component), graph)
        steps = [cycle[0]]
        for importer, imported in itertools.pairwise(cycle):
            edge = where[(importer, imported)]
            steps.append(f"-> {imported} ({edge.path.relative_to(root.parent)}:{edge.line})")
        others = sorted(set(component) - set(cycle))
        extra = f" [same tangle: {', '.join(others)}]" if others else ""
        reports.append(" ".join(steps) + extra)
    return reports


# --- the checkers for the other two rules ---------------------------------------------


def top_level_modules(root: Path) -> list[str]:
    """The ``.py`` modules directly in ``root``, besides ``__init__`` and ``__main__``."""
    return sorted(
        path.stem for path in root.glob("*.py") if path.stem not in ("__init__", "__main__")
    )


def resolve_handler(dotted: str) -> Callable[..., object]:
    """Import ``module.attribute`` as Lambda does; it must take ``(event, context)``."""
    module_name, _, attribute = dotted.rpartition(".")
    module = importlib.import_module(module_name)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise AssertionError(f"{dotted} is {handler!r}, not a function Lambda can call")
    try:
        inspect.signature(handler).bind({}, object())
    except TypeError as exc:
        raise AssertionError(f"{dotted} does not take Lambda's (event, context): {exc}") from exc
    return handler


# --- the rules, on the package ---------------------------------------------------------


def test_no_import_cycle_between_modules() -> None:
    cycles = import_cycles(PACKAGE_ROOT)
    assert not cycles, "import cycles (counting every import statement):\n" + "\n".join(cycles)


def test_few_modules_directly_in_the_package() -> None:
    modules = top_level_modules(PACKAGE_ROOT)
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(modules)} modules directly in currents_export/ (at most "
        f"{MAX_TOP_LEVEL_MODULES}): {', '.join(modules)}; put the new one in its layer's package"
    )


def test_the_lambda_handler_path_the_stack_uses_resolves() -> None:
    resolve_handler(LAMBDA_HANDLER)
    # The stack deploys exactly this path (and no other handler that would not resolve).
    deployed = re.findall(r"^\s*Handler:\s*['\"]?([\w.]+)", TEMPLATE.read_text(), re.MULTILINE)
    assert deployed, f"no Handler: in {TEMPLATE}"
    for path in deployed:
        resolve_handler(path)
    assert LAMBDA_HANDLER in deployed


# --- the checkers, proved on packages that break the rules -----------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path relative to the package → source) as package ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, source in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"a.py": "import pkg.b\n", "b.py": "from pkg.a import thing\n"},
            "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.a (pkg/b.py:1)",
            id="module-level",
        ),
        pytest.param(
            {"a.py": "import pkg.b\n",
             "b.py": "def later():\n    from pkg import a\n    return a\n"},
            "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.a (pkg/b.py:2)",
            id="inside-a-function-and-from-pkg-import-submodule",
        ),
        pytest.param(
            {"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from pkg.b import B\n",
             "b.py": "from . import a\n"},
            "pkg.a -> pkg.b (pkg/a.py:3) -> pkg.a (pkg/b.py:1)",
            id="type-checking-and-relative",
        ),
        pytest.param(
            {"sub/__init__.py": "from .inner import x\n",
             "sub/inner.py": "from ..top import y\n",
             "top.py": "from .sub import inner\n"},
            "pkg.sub.inner -> pkg.top (pkg/sub/inner.py:1) -> pkg.sub.inner (pkg/top.py:1)",
            id="two-dots-and-from-package-import-module",
        ),
        pytest.param(
            {"a.py": "import pkg.b as b\n", "b.py": "import pkg.c\n",
             "c.py": "import os\nfrom pkg.a import f\n"},
            "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.c (pkg/b.py:1) -> pkg.a (pkg/c.py:2)",
            id="three-modules",
        ),
    ],
)
def test_the_cycle_check_finds_and_reports_a_cycle(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    root = write_package(tmp_path / "pkg", files)
    assert import_cycles(root) == [expected]


def test_the_cycle_check_counts_the_package_init_and_passes_without_a_cycle(tmp_path: Path) -> None:
    # ``from pkg import name`` (not a module) goes to the package, not to a sibling; the
    # package importing its modules and the modules importing each other one way is fine.
    root = write_package(tmp_path / "pkg", {
        "__init__.py": "from pkg.a import A\nfrom . import b\n",
        "a.py": "from pkg.b import helper\nimport json\nA = 1\n",
        "b.py": "from pkg.c import C\ndef helper():\n    from .c import D\n",
        "c.py": "import pkg\nC = D = 0\n",  # the package, only its __init__ (no sibling)
    })
    edges = {(e.importer, e.imported) for e in import_edges(root)}
    assert ("pkg.c", "pkg") in edges and ("pkg", "pkg.a") in edges
    assert import_cycles(root) == [
        "pkg -> pkg.b (pkg/__init__.py:2) -> pkg.c (pkg/b.py:1) -> pkg (pkg/c.py:1)"
        " [same tangle: pkg.a]"
    ]
    (root / "c.py").write_text("C = D = 0\n", encoding="utf-8")
    assert import_cycles(root) == []


def test_the_top_level_check_fails_past_the_limit(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(MAX_TOP_LEVEL_MODULES)]
    root = write_package(tmp_path / "pkg", {
        "__main__.py": "", "sub/__init__.py": "", "sub/deep.py": "", "notes.txt": "",
        **{f"{name}.py": "" for name in names},
    })
    assert top_level_modules(root) == sorted(names)  # at the limit: kept
    (root / "one_more.py").write_text("", encoding="utf-8")
    assert len(top_level_modules(root)) == MAX_TOP_LEVEL_MODULES + 1  # the rule would fail


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def other(event, context):\n    return None\n", "not a function Lambda can call"),
        ("handler = None\n", "not a function Lambda can call"),
        ("def handler(event):\n    return None\n", "does not take Lambda's"),
    ],
)
def test_the_handler_check_fails_when_the_path_does_not_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    good, bad = f"good_stack_{tmp_path.name}", f"bad_stack_{tmp_path.name}"
    write_package(tmp_path / good, {
        "aws_lambda/__init__.py": "def handler(event, context):\n    return None\n"})
    write_package(tmp_path / bad, {"aws_lambda/__init__.py": source})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert callable(resolve_handler(f"{good}.aws_lambda.handler"))
        with pytest.raises(AssertionError, match=message):
            resolve_handler(f"{bad}.aws_lambda.handler")
    finally:
        for loaded in [m for m in sys.modules if m.split(".")[0] in (good, bad)]:
            del sys.modules[loaded]
