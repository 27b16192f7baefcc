"""Plumbing the side-by-side benchmarks share: a measurement in a child process (its own threads, allocator and
imports) read back as the last JSON line it prints, and a re-run under Xvfb for the window's benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys


def child_json(cmd: list[str], *, timeout: float = 900, **kwargs) -> dict:
    """Run `cmd`; its last stdout line starting with "{" as a dict, or {"error": the last stderr line}."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {out.returncode}"}
    return json.loads(lines[-1])


def rerun_under_xvfb(screen: str = "1600x1000x24") -> int | None:
    """Without a display: run this script again under `xvfb-run` and return its exit status (2 with one JSON
    line when there is no xvfb-run); None when a display is there (go on)."""
    if os.environ.get("DISPLAY"):
        return None
    if not shutil.which("xvfb-run"):
        print(json.dumps({"error": "no display and no xvfb-run (apt-get install xvfb)"}))
        return 2
    return subprocess.call(["xvfb-run", "-a", "-s", f"-screen 0 {screen}", sys.executable, *sys.argv])
