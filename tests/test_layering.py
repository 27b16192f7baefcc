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
