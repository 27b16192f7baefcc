"""The compute core must import no Qt: importing every core module in a fresh interpreter loads no Qt module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import deepvis_app


def test_core_modules_import_no_qt():
    names = [m.name for m in pkgutil.walk_packages(deepvis_app.__path__, "deepvis_app.")
             if not m.name.startswith("deepvis_app.gui") and not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "qt = ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'shiboken6', 'superqt')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in qt]\n"
            "print(','.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"core imported Qt: {proc.stdout}"
    assert "deepvis_app.pipeline" in names and len(names) > 8
