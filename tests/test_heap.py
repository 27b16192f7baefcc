"""`heap.KeptMemory`: the arenas' free memory is handed back once what stays resident beyond the bytes in use grew
past the limit -- not before (the kept memory is what makes big tensors fast), not on every check, and with real
glibc arenas the resident set falls when it trims."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deepvis_app import heap

MB = 1 << 20


def test_trims_only_when_the_excess_grew_past_the_limit(monkeypatch):
    state = {"in_use": 500 * MB, "resident": 700 * MB}
    trims = []
    monkeypatch.setattr(heap, "heap_in_use", lambda: state["in_use"])
    monkeypatch.setattr(heap, "resident_private", lambda: state["resident"])

    def trim():
        trims.append(state["resident"])
        state["resident"] = state["in_use"] + 150 * MB  # what a trim leaves: fragments and non-heap memory
        return True

    monkeypatch.setattr(heap, "release_freed_memory", trim)
    kept = heap.KeptMemory(limit=256 * MB, every=0.0)
    assert kept.check() and kept.floor == 150 * MB  # the first check sets the level after a trim
    state["resident"] += 200 * MB  # 200 MB kept: under the limit
    assert not kept.check() and not kept.check()
    state["in_use"] += 300 * MB  # in use, not kept: no trim either
    state["resident"] += 300 * MB
    assert not kept.check()
    state["resident"] += 100 * MB  # now 300 MB kept beyond the level
    assert kept.check() and len(trims) == 2 and kept.trims == 2
    assert kept.floor == 150 * MB


def test_checks_are_rate_limited_and_fall_back_to_a_timed_trim(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "heap_in_use", lambda: None)  # no mallinfo2 (musl, macOS)
    monkeypatch.setattr(heap, "release_freed_memory", lambda: calls.append(1) or True)
    clock = [1000.0]
    monkeypatch.setattr(heap.time, "monotonic", lambda: clock[0])
    kept = heap.KeptMemory(every=1.0)
    assert not kept.check()  # within `every` of creation
    clock[0] += 2.0
    assert not kept.check() and not calls  # checked, but the timed fallback waits TRIM_EVERY_S
    clock[0] += heap.TRIM_EVERY_S
    assert kept.check() and calls == [1]
    assert not kept.check()  # rate-limited


_REAL = """
import json, sys
import torch
from deepvis_app.devices import keep_freed_memory
from deepvis_app import heap
keep_freed_memory()
kept = heap.KeptMemory(limit=128 << 20, every=0.0)
kept.check()  # the level after a first trim
blocks = [torch.ones(n << 18) for n in range(1, 48)]  # 1..47 MiB each, ~1.1 GiB, touched
keep = blocks[::7]  # a few stay alive, so the freed ones are not all at the top of the heap
del blocks
before = heap.resident_private()
excess = kept.excess() - kept.floor
trimmed = kept.check()
print(json.dumps({"before": before, "after": heap.resident_private(), "excess": excess, "trimmed": trimmed,
                  "trims": kept.trims}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or heap.heap_in_use() is None, reason="glibc mallinfo2")
def test_real_arenas_give_the_kept_memory_back():
    env = {k: v for k, v in os.environ.items() if k != "DEEPVIS_MALLOC"}
    out = subprocess.run([sys.executable, "-c", _REAL], env=env, capture_output=True, text=True, check=True,
                         timeout=180)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["excess"] > 500 * MB  # the keep policy kept the freed blocks resident...
    assert r["trimmed"] and r["trims"] == 2
    assert r["before"] - r["after"] > 500 * MB  # ...and the check handed them back
