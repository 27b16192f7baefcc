"""The live path on a GPU: its own high-priority stream, no device-wide sync, a fixed number of host syncs per
frame (`torch.cuda.set_sync_debug_mode` counts them: a read added to the live path fails here), and a program told
to use cuda:1 opens no context on cuda:0."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from gpu_common import model, needs_cuda

from deepvis_app.values import Unit, ViewRequest

pytestmark = needs_cuda

# Host syncs per frame, after warm-up: the one packed copy of everything the frame shows (grid, statistics,
# predictions, the unit's map and peak), plus one read of the unit's peak when attributions need its position.
# Raise a budget only with a reason written here.
LIVE_SYNCS = {"grid": 1, "unit": 1, "unit + 3 views": 2}


def _syncs(processor, frame, request) -> int:
    for _ in range(3):  # warm-up: cuDNN autotuning, caches, the first frame's geometry
        processor.process(frame, request)
    torch.cuda.current_stream().synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            processor.process(frame, request)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("case", list(LIVE_SYNCS))
def test_host_syncs_per_live_frame(case, frames):
    from deepvis_app.devices import live_stream
    from deepvis_app.pipeline import Frame, FrameProcessor

    vm = model("efficientnet_lite0", "cuda")
    unit = Unit("_blocks.7", 3) if case != "grid" else None
    views = ("gradient", "deconv", "guided") if case == "unit + 3 views" else ()
    request = ViewRequest(layer="_blocks.3._swish@1", unit=unit, attribution=views)
    frame = Frame(0, frames[1], time.perf_counter())
    with live_stream(vm.device):
        count = _syncs(FrameProcessor(vm), frame, request)
    assert count <= LIVE_SYNCS[case], f"{case}: {count} host syncs per frame, budget {LIVE_SYNCS[case]}"


def test_worker_runs_on_the_live_stream_and_jobs_on_low_priority_ones(frames, monkeypatch):
    from deepvis_app.devices import JOB_PRIORITY, LIVE_PRIORITY, job_stream
    from deepvis_app.pipeline import Frame, FrameProcessor, InferenceWorker, LatestSlot

    vm = model("efficientnet_lite0", "cuda")
    seen: list[torch.cuda.Stream] = []
    real = FrameProcessor.process

    def process(self, frame, req):
        seen.append(torch.cuda.current_stream(vm.device))
        return real(self, frame, req)

    monkeypatch.setattr(FrameProcessor, "process", process)
    slot = LatestSlot()
    results: list = []
    worker = InferenceWorker(vm, slot, results.append)
    worker.start()
    slot.put(Frame(0, frames[0], time.perf_counter()))
    deadline = time.monotonic() + 120
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join(10)
    assert results and seen
    default = torch.cuda.default_stream(vm.device)
    assert seen[0] != default and seen[0].priority == LIVE_PRIORITY
    with job_stream(vm.device) as job:
        assert job is not None and job != default and job != seen[0] and job.priority == JOB_PRIORITY
        assert torch.cuda.current_stream(vm.device) == job


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_1_opens_no_context_on_cuda_0(tmp_path):
    script = """
import time, numpy as np, torch
from deepvis_app.zoo import load_model
from deepvis_app.pipeline import Frame, InferenceWorker, LatestSlot
vm = load_model("efficientnet_lite0", weights="random", device="cuda:1")
slot, done = LatestSlot(), []
w = InferenceWorker(vm, slot, done.append)
w.start()
slot.put(Frame(0, np.zeros((300, 400, 3), np.uint8), time.perf_counter()))
while not done:
    time.sleep(0.01)
w.stop(); w.join(10)
vm.preprocess.to_tensor(np.zeros((224, 224, 3), np.uint8))  # the pinned path, from the main thread
print(torch._C._cuda_hasPrimaryContext(0), torch._C._cuda_hasPrimaryContext(1))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["False", "True"]


def test_a_frame_is_the_cpus_frame(frames):
    from deepvis_app.devices import exact_math, live_stream
    from deepvis_app.pipeline import Frame, FrameProcessor

    cpu, gpu = model("efficientnet_lite0", "cpu"), model("efficientnet_lite0", "cuda")
    request = ViewRequest(layer="_blocks.3._swish@1", unit=Unit("_blocks.7", 3), attribution=("guided",))
    frame = Frame(0, frames[2], time.perf_counter())
    want = FrameProcessor(cpu).process(frame, request)
    with live_stream(gpu.device), exact_math(gpu.device):
        got = FrameProcessor(gpu).process(frame, request)
    assert np.array_equal(got.image, want.image)
    assert got.grid.layout == want.grid.layout and np.abs(got.grid.image.astype(int) - want.grid.image).max() <= 1
    assert [p[0] for p in got.predictions] == [p[0] for p in want.predictions]
    assert got.unit_position == want.unit_position
    assert np.abs(got.attributions["guided"].astype(int) - want.attributions["guided"]).max() <= 2
