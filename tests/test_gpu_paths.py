"""What keeps the GPU paths right, checked on the CPU (tests/gpu runs the same paths on CUDA): the pinned buffers'
events, the live worker's stream, the box-cropped backward kept to the CPU, receptive fields measured on the CPU,
occlusion's self-checks and notices, batches halved when memory runs out (occlusion, scan, crops) with the same
results, and reads that would make the host wait for the GPU (one packed copy; none per optimizer step)."""

from __future__ import annotations

import gc
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from host_reads import HostReads
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- pinned buffers and their events

class FakeEvent:
    """Logs record/wait with its number (events are made lazily, one per buffer, so event k is buffer k's)."""

    def __init__(self, log: list[tuple[str, int]], number: int, done: bool = False) -> None:
        self.log, self.number, self.done = log, number, done

    def record(self, stream=None) -> None:
        self.log.append(("record", self.number))

    def query(self) -> bool:  # the copy has finished (a real event: without waiting)
        return self.done

    def synchronize(self) -> None:
        self.log.append(("wait", self.number))


def _ring(log: list[tuple[str, int]], count: int = 3, done: bool = False):
    from deepvis_app.zoo.preprocess import StagingRing

    made = iter(range(1000))
    return StagingRing((4, 4, 3), torch.device("cpu"), count=count, pin=False,
                       event=lambda: FakeEvent(log, next(made), done))


def test_each_buffer_waits_for_its_last_copy_before_it_is_refilled():
    log: list[tuple[str, int]] = []
    ring = _ring(log)
    images = [torch.full((4, 4, 3), i, dtype=torch.uint8) for i in range(7)]
    outs = [ring.upload(img) for img in images]
    assert all(torch.equal(o, img) for o, img in zip(outs, images, strict=True))  # each its own pixels
    # 3 buffers: the first round only records; every refill first waits for that buffer's last copy
    assert log == [("record", 0), ("record", 1), ("record", 2),
                   ("wait", 0), ("record", 0), ("wait", 1), ("record", 1), ("wait", 2), ("record", 2),
                   ("wait", 0), ("record", 0)]
    log.clear()
    ring = _ring(log, done=True)  # copies already finished when their buffer comes round: no wait at all
    outs = [ring.upload(img) for img in images]
    assert all(torch.equal(o, img) for o, img in zip(outs, images, strict=True))
    assert log == [("record", k % 3) for k in range(7)]


def test_the_turns_are_safe_for_many_threads():
    log: list[tuple[str, int]] = []
    ring = _ring(log, count=2)
    bad: list[int] = []

    def send(base: int) -> None:
        for i in range(50):
            img = torch.full((4, 4, 3), (base + i) % 256, dtype=torch.uint8)
            if not torch.equal(ring.upload(img), img):
                bad.append(base + i)

    threads = [threading.Thread(target=send, args=(t * 50,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not bad
    for k in (0, 1):  # per buffer: record, then (wait, record) pairs: never refilled without its wait
        ops = [op for op, n in log if n == k]
        assert ops == ["record"] + ["wait", "record"] * ((len(ops) - 1) // 2)
    assert len(log) == 2 * 300 - 2  # 300 uploads, each recorded, all but the first two waited


def test_preprocessing_on_the_cpu_has_no_staging(tiny):
    assert tiny.preprocess.staging is None
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = tiny.preprocess.to_tensor(rgb)
    want = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - tiny.preprocess.mean) * tiny.preprocess.inv_std
    assert torch.equal(x, want)


# ---------------------------------------------------------------- the live worker's stream

def test_the_live_worker_runs_on_the_live_stream_of_its_models_device(tiny, monkeypatch):
    from deepvis_app.pipeline import Frame, InferenceWorker, LatestSlot
    from deepvis_app.pipeline import worker as worker_module
    from deepvis_app.values import ViewRequest

    entered: list[torch.device] = []
    waited: list[torch.device] = []

    @contextmanager
    def fake_live(device):
        entered.append(device)
        yield None

    monkeypatch.setattr(worker_module, "live_stream", fake_live)
    monkeypatch.setattr(worker_module, "wait_for_other_streams", waited.append)
    slot = LatestSlot()
    results, errors = [], []
    worker = InferenceWorker(tiny, slot, results.append, on_error=errors.append)
    worker.start()
    rgb = np.zeros((32, 32, 3), np.uint8)
    slot.put(Frame(0, rgb, time.perf_counter()))
    deadline = time.monotonic() + 60
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    elsewhere = replace(tiny, device=torch.device("meta"))  # a model on another device: the stream is re-entered
    worker.set_model(elsewhere, ViewRequest(request_id=1, layer="conv1"))
    slot.put(Frame(1, rgb, time.perf_counter()))
    while len(entered) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join(10)
    assert results and results[0].frame_id == 0
    assert entered == [torch.device("cpu"), torch.device("meta")]
    assert waited[:1] == [torch.device("cpu")] and torch.device("meta") in waited  # before each model's frames


def test_nothing_in_the_live_path_waits_for_the_whole_device():
    """`torch.cuda.synchronize` waits for every stream, the background jobs' too: the live path never calls it."""
    files = ["deepvis_app/pipeline/worker.py", "deepvis_app/pipeline/frames.py", "deepvis_app/render.py",
             "deepvis_app/zoo/preprocess.py", "deepvis_app/devices.py", "deepvis_app/attribution/fused.py",
             "deepvis_app/attribution/context.py"]
    for rel in files:
        text = (ROOT / rel).read_text()
        assert not re.search(r"cuda\.synchronize\(|torch\.cuda\.synchronize", text), rel


# ---------------------------------------------------------------- attribution and receptive fields

def test_the_box_cropped_backward_runs_on_the_cpu_only():
    from deepvis_app.attribution import kernels
    from deepvis_app.attribution.fused import Chain, box_crops
    from deepvis_app.attribution.rules import RuleState

    done = {}
    for device in ("cpu", "meta"):
        x = torch.zeros(1, 4, 32, 32, device=device)
        weight = torch.ones(4, 4, 3, 3, device=device)
        state = RuleState()
        chain = Chain(x, weight, (1, 1), (1, 1), (1, 1), 1, None, state)
        grad = torch.zeros(1, 4, 32, 32, device=device)
        if device == "cpu":
            grad[0, 1, 10, 20] = 1.0  # one neuron: its gradient's box is 1x1
        out = chain.backward(grad)
        assert out.shape == x.shape and out.device.type == device
        done[device] = state.chain_steps
    # meta stands for any device but the CPU: dense (finding a box would read the device)
    assert done == {"cpu": [kernels.SEARCHED], "meta": [kernels.DENSE]}
    assert box_crops(torch.zeros(1)) and not box_crops(torch.zeros(1, device="meta"))


def test_receptive_fields_are_measured_on_the_cpu_wherever_the_model_is():
    """A model on the meta device has no values at all: the boxes come out right, so they were measured on a CPU
    copy (where gradients have exact zeros), for a channels-first and a channels-last layer."""
    from layout_nets import channels_last

    from deepvis_app.receptive_field import rf_box, rf_geometry, rf_is_local

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)).eval()

    meta = net().to("meta")
    assert rf_geometry(meta, "4", 32) == rf_geometry(net(), "4", 32)
    assert rf_box(meta, "3", 2, 3, 32) == (5, 9, 13, 17)  # stride 4, offset -3, size 8: by hand
    assert rf_is_local(meta, "4", 32)
    cl = channels_last().to("meta")
    assert rf_box(cl, "act", 5, 7, 32) == (4, 6, 7, 9)  # through the layout: rows are positions, not channels


# ---------------------------------------------------------------- occlusion

class Marked(nn.Sequential):
    """A class of its own, so the test can find every copy of the net (a deep copy keeps the class)."""


def _occlusion_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Marked(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                 nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                 nn.Linear(16, 10))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


ID = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 48, 48)


def test_occlusion_halves_its_batch_when_memory_runs_out_and_gives_the_same_map(picture, monkeypatch):
    from deepvis_app.occlusion import occlusion_map
    from deepvis_app.occlusion.engine import Engine

    net = _occlusion_net()
    want = occlusion_map(net, picture, 3, window=8, stride=4, batch=16, **ID)
    sizes: list[int] = []
    real = Engine.scores

    def scores(self, positions):
        if not sizes:
            sizes.append(-len(positions))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        sizes.append(len(positions))
        return real(self, positions)

    monkeypatch.setattr(Engine, "scores", scores)
    heard: list[str] = []
    got = occlusion_map(net, picture, 3, window=8, stride=4, batch=16, on_notice=heard.append, **ID)
    assert heard == ["out of memory on cpu with 16 window positions at once: continuing with 8"]
    assert sizes[0] == -16 and max(sizes[1:]) == 8 and sum(sizes[1:]) == got.total == 121
    assert torch.equal(got.scores, want.scores) and torch.equal(got.labels, want.labels)
    assert got.note == want.note and "incremental up to" in got.note  # the same fast paths ran


def test_occlusion_says_when_a_fast_path_fails_its_self_check(picture, monkeypatch):
    from deepvis_app.occlusion import engine as engine_module
    from deepvis_app.occlusion import naive_occlusion, occlusion_map

    net = _occlusion_net()
    heard: list[str] = []
    fine = occlusion_map(net, picture, 3, window=8, stride=8, on_notice=heard.append, **ID)
    assert heard == [] and "BatchNorm folded" in fine.note  # every fast path passed: nothing to say

    def wrong_copy(net, x, *, fold=True):
        import copy

        bad = copy.deepcopy(net)
        with torch.no_grad():
            bad[-1].bias[3] += 0.5  # class 3's logit moved: other scores
        return bad

    real_plan = engine_module.cached_plan

    def broken_plan(*args):
        plan = real_plan(*args)
        return replace(plan, stages=[replace(st, crop_y=1, crop_x=1) for st in plan.stages])

    monkeypatch.setattr(engine_module, "fast_copy", wrong_copy)
    monkeypatch.setattr(engine_module, "cached_plan", broken_plan)
    slow = occlusion_map(net, picture, 3, window=8, stride=8, on_notice=heard.append, **ID)
    assert heard == [
        "occlusion: the faster copy of the model did not reproduce its scores on cpu (channels-last, BatchNorm "
        "folded: other scores; channels-last: other scores); using the model as it is (slower)",
        "occlusion: incremental inference did not reproduce the full forward on cpu; every window is computed in "
        "full (slower)"]
    assert slow.note.startswith("full recomputation (incremental self-check failed") and slow.note.endswith("plain")
    ref = naive_occlusion(net, picture, lambda out: out.softmax(dim=1)[:, 3], window=8, stride=8,
                          fill=torch.full_like(picture, 0.5))
    torch.testing.assert_close(slow.scores, ref, rtol=0, atol=1e-6)  # the slow path is the exact one


def test_occlusions_copies_of_the_model_go_with_it(picture):
    from deepvis_app.occlusion import occlusion_map

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, Marked) for o in gc.get_objects())

    before = alive()
    net = _occlusion_net()
    m = occlusion_map(net, picture, 3, window=8, stride=8, **ID)
    assert "BatchNorm folded" in m.note and alive() >= before + 2  # the net and its faster copy
    del net, m
    assert alive() == before  # a job slot's model freed on a model switch takes its occlusion copies with it


# ---------------------------------------------------------------- scan and crops

def test_scan_halves_its_batch_when_memory_runs_out_and_writes_the_same_store(tiny, tmp_path, monkeypatch):
    from test_topk import LAYERS, write_photos

    from deepvis_app.topk import TopKStore
    from deepvis_app.topk.running import RunningTopK
    from deepvis_app.topk.scan import scan

    write_photos(tmp_path / "data")
    kw = dict(layers=LAYERS, top_k=3, batch_size=4, workers=0, progress=False, attribution=("deconv",))
    scan(tiny, tmp_path / "data", tmp_path / "clean", **kw)
    sizes: list[int] = []
    real = RunningTopK.update

    def update(self, act, image_ids):
        sizes.append(int(act.shape[0]))
        if len(sizes) == 2:  # the first batch's second layer: the first layer has merged it already
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        return real(self, act, image_ids)

    monkeypatch.setattr(RunningTopK, "update", update)
    heard: list[str] = []
    scan(tiny, tmp_path / "data", tmp_path / "halved", on_notice=heard.append, **kw)
    assert heard == ["out of memory on cpu with 4 images at once: continuing with 2"]
    assert sizes[:2] == [4, 4] and max(sizes[2:]) == 2
    clean, halved = TopKStore.open(tmp_path / "clean"), TopKStore.open(tmp_path / "halved")
    for layer in clean.layers:  # the merge undone for the layer that had it: no image counted twice
        for unit in range(clean.layer_info(layer)["channels"]):
            a, b = clean.entries(layer, unit), halved.entries(layer, unit)
            assert [(e.image_id, e.y, e.x, e.value) for e in a] == [(e.image_id, e.y, e.x, e.value) for e in b]
            for e in a:
                assert np.array_equal(clean.crop(layer, unit, e.rank, "deconv"),
                                      halved.crop(layer, unit, e.rank, "deconv"))


def test_crops_split_a_batch_that_runs_out_of_memory(tiny, tmp_path, monkeypatch):
    from test_topk import write_photos

    from deepvis_app.attribution import AttributionContext
    from deepvis_app.topk import TopKStore
    from deepvis_app.topk.crops import render_unit
    from deepvis_app.topk.scan import scan

    write_photos(tmp_path / "data", bad=False)
    scan(tiny, tmp_path / "data", tmp_path / "store", layers="relu2", top_k=4, batch_size=8, workers=0,
         progress=False)
    store = TopKStore.open(tmp_path / "store")
    want = render_unit(store, tiny, "relu2", 1, write=False)
    real = AttributionContext.grad
    failed: list[int] = []

    def grad(self, objective, inputs, rule="gradient", *, retain_graph=True):
        if not failed:
            failed.append(inputs.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, objective, inputs, rule, retain_graph=retain_graph)

    monkeypatch.setattr(AttributionContext, "grad", grad)
    heard: list[str] = []
    got = render_unit(store, tiny, "relu2", 1, write=False, on_notice=heard.append)
    assert failed and failed[0] > 1
    assert heard == [f"out of memory on cpu with {failed[0]} crop windows at once: continuing with {failed[0] // 2}"]
    assert want.keys() == got.keys() and len(want) == 8  # 4 entries x deconv, guided: each once
    assert all(np.array_equal(want[k], got[k]) for k in want)


# ---------------------------------------------------------------- reads that make the host wait

def test_one_packed_copy_brings_every_array_back():
    from deepvis_app.render import grid_parts, to_host

    maps = torch.randn(10, 6, 6)
    parts = grid_parts(maps, min_tile=8)
    send = {**parts.tensors(), "probs": torch.rand(5, dtype=torch.float64), "flag": torch.tensor(True),
            "ids": torch.arange(7), "half": torch.randn(3).half(), "nothing": None}
    with HostReads() as reads:
        host = to_host(send, pack=True)
    assert reads.calls == ["cpu"]  # one copy for all of them
    assert set(host) == set(send) - {"nothing"}
    for name, t in send.items():
        if t is not None:
            assert host[name].dtype == t.numpy().dtype and np.array_equal(host[name], t.numpy()), name
    grid = parts.finish(host)
    from deepvis_app.render import render_grid

    ref = render_grid(maps, min_tile=8)
    assert np.array_equal(grid.image, ref.image) and np.array_equal(grid.channel_max, ref.channel_max)
    assert grid.signed == ref.signed


def test_an_optimizer_step_does_not_wait_for_the_device():
    from helpers import tiny_conv_net

    from deepvis_app.optimize import objectives as obj
    from deepvis_app.optimize.engine import optimize

    net = tiny_conv_net()

    def reads(steps: int) -> tuple[int, list[float]]:
        with HostReads() as counted:
            res = optimize(net, obj.channel("conv2", 1), steps=steps, size=16, use_cache=False,
                           transforms="none")
        return len(counted), res.history

    few, short = reads(2)
    many, long = reads(10)
    assert many == few  # reads happen at the end, not per step
    assert len(short) == 2 and len(long) == 10 and long[:2] == short  # the history is still every step's value
