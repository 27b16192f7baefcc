"""The import-linter contract "core imports no Qt and no GUI" names every core module: a new module of the
package is either listed there or is the GUI, so no core module escapes the check by being forgotten."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import deepvis_app

ROOT = Path(__file__).resolve().parents[1]


def test_core_contract_lists_every_core_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if c["name"].startswith("Core imports no Qt"))
    listed = set(core["source_modules"])
    top = {f"deepvis_app.{m.name}" for m in pkgutil.iter_modules(deepvis_app.__path__)}
    expected = top - {"deepvis_app.gui", "deepvis_app.__main__"}
    assert expected <= listed, f"add to the core contract in pyproject.toml: {sorted(expected - listed)}"
    assert set(core["forbidden_modules"]) >= {"deepvis_app.gui", "PySide6", "pyqtgraph", "superqt"}


def import_cycles(package: str) -> list[list[str]]:
    """Every import cycle among the modules of `package`, one shortest loop per strongly connected group.

    grimp reads every import statement, function-level ones included (they only hide a cycle from Python's import
    order, not from a reader); imports under `if TYPE_CHECKING:` never run and are left out."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None, exclude_type_checking_imports=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:  # Tarjan's strongly connected components, iteratively
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.find_modules_directly_imported_by(target)))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == module:
                            break
                    if len(group) > 1 or module in graph.find_modules_directly_imported_by(module):
                        groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    loops = []
    for group in groups:
        first = group[0]
        nxt = sorted(m for m in graph.find_modules_directly_imported_by(first) if m in group)[0]
        chain = graph.find_shortest_chain(importer=nxt, imported=first) or (first,)
        loops.append([first, *chain])
    return loops


def test_no_import_cycles():
    cycles = import_cycles("deepvis_app")
    assert not cycles, "import cycles (break each, e.g. move the shared part into its own module):\n" + "\n".join(
        " -> ".join(loop) for loop in cycles)


def test_cycle_check_sees_function_level_imports(tmp_path, monkeypatch):
    """The checker itself: a cycle hidden behind a function-level import (as cli -> gui.app -> commands.run -> cli
    was) is found; the same package without it is clean."""
    import sys

    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def later():\n    from . import c\n    return c\n")
    (pkg / "c.py").write_text("def later():\n    from .a import b\n    return b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclepkg") == [["cyclepkg.a", "cyclepkg.b", "cyclepkg.c", "cyclepkg.a"]]
    (pkg / "c.py").write_text("def later():\n    return 1\n")
    sys.modules.pop("cyclepkg", None)
    assert import_cycles("cyclepkg") == []
