"""A live frame reads its results back from the device once (`render.to_host`: the grid, its statistics, the
predictions, the unit's peak and map, the attribution views packed into one copy), plus once more for the unit's
peak when attributions must explain it. `host_reads.HostReads` sees any other read a GPU would wait for (`.cpu()`,
`.item()`, `float(t)`, `nonzero`, a mask): there must be none. tests/gpu/test_live_gpu.py counts the real syncs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from host_reads import HostReads

from deepvis_app.values import Unit, ViewRequest

CASES = {  # request -> to_host calls per frame
    "grid": (dict(), 1),
    "unit": (dict(unit=Unit("_blocks.7", 3)), 1),
    "unit at a position + 3 views": (dict(unit=Unit("_blocks.7", 3, 4, 5),
                                          attribution=("gradient", "deconv", "guided")), 1),
    "unit + 3 views": (dict(unit=Unit("_blocks.7", 3), attribution=("gradient", "deconv", "guided")), 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_live_frame_reads_the_host_once(lite0, photos, monkeypatch, case):
    from deepvis_app import devices, render
    from deepvis_app.pipeline import Frame, FrameProcessor
    from deepvis_app.pipeline import processor as processor_module

    # the device paths (what a GPU runs): on the CPU the live code may read decisions on the host for free
    monkeypatch.setattr(devices, "host_reads_free", lambda _t: False)
    extra, copies = CASES[case]
    request = ViewRequest(layer="_blocks.3._swish@1", **extra)
    processor = FrameProcessor(lite0)
    frame = Frame(0, photos["chelsea"], time.perf_counter())
    want = processor.process(frame, request)  # warm-up (caches, the first frame's copy of the net)
    calls: list[int] = []
    real = render.to_host

    def counted(tensors, **kw):
        calls.append(len(tensors))
        return real(tensors, **kw)

    monkeypatch.setattr(processor_module, "to_host", counted)
    with HostReads() as reads:
        got = processor.process(frame, request)
    assert reads.calls == [], f"{case}: reads outside the packed copy: {reads.calls}"
    assert len(calls) == copies, case
    assert np.array_equal(got.grid.image, want.grid.image) and got.predictions == want.predictions
    assert got.unit_position == want.unit_position and got.unit_value == want.unit_value
