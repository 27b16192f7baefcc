"""Deconv / guided crops: lazy per-unit rendering into a store, windowed backward == attribute() on the full image,
early-stopping forward, thread-filtered capture, locality of receptive fields, channels-last and token units."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
import skimage.data
import torch
from test_topk import LAYERS, write_photos
from torch import nn

from deepvis_app.attribution import attribute, render_view
from deepvis_app.errors import DeepVisError
from deepvis_app.probe import Capture
from deepvis_app.receptive_field import rf_box, rf_geometry, rf_is_local
from deepvis_app.topk import TopKStore, crop_box
from deepvis_app.topk.crops import CropJob, iter_crops, iter_render_unit, render_unit
from deepvis_app.topk.scan import scan
from deepvis_app.zoo import load_model


def _reference(vm, image: np.ndarray, layer: str, where: tuple, box, kind: str) -> np.ndarray:
    attr = attribute(vm.net, vm.preprocess.to_tensor(image), layer=layer, unit=where, method=kind)
    return crop_box(render_view(attr, "norm"), box)[0]


def test_lazy_render_writes_crops_equal_to_eager_and_attribute(tiny, tmp_path):
    write_photos(tmp_path / "data", bad=False)
    kw = dict(layers=LAYERS, top_k=3, batch_size=4, workers=0, progress=False)
    scan(tiny, tmp_path / "data", tmp_path / "eager", attribution=("deconv", "guided"), **kw)
    scan(tiny, tmp_path / "data", tmp_path / "lazy", **kw)
    eager, lazy = TopKStore.open(tmp_path / "eager"), TopKStore.open(tmp_path / "lazy")
    assert lazy.lazy_kinds == ["deconv", "guided"] and not (tmp_path / "lazy" / "crops").exists()
    assert lazy.crop("relu2", 1, 0, "guided") is None  # not rendered yet
    old = os.umask(0o022)
    try:
        got = list(iter_render_unit(lazy, tiny, "relu2", 1))
    finally:
        os.umask(old)
    entries = lazy.entries("relu2", 1)
    assert sorted((c.rank, c.kind) for c in got) == sorted((e.rank, k) for e in entries for k in ("deconv", "guided"))
    assert all(c.written for c in got)
    for c in got:
        e = entries[c.rank]
        stored = lazy.crop("relu2", 1, c.rank, c.kind)
        np.testing.assert_array_equal(stored, c.image)
        want = _reference(tiny, lazy.fitted(e), "relu2", (1, e.y, e.x), e.box, c.kind).astype(int)
        assert np.abs(stored.astype(int) - want).max() <= 1 and want.max() > 0
        assert np.abs(stored.astype(int) - eager.crop("relu2", 1, c.rank, c.kind).astype(int)).max() <= 1
        mode = stat.S_IMODE(lazy.crop_path("relu2", 1, c.rank, c.kind).stat().st_mode)
        assert mode == 0o644, oct(mode)
    # the next view reads what was written (same arrays), nothing left behind but the crops
    again = render_unit(lazy, tiny, "relu2", 1)
    for c in got:
        np.testing.assert_array_equal(again[(c.rank, c.kind)], c.image)
    assert not [p for p in (tmp_path / "lazy").rglob("*") if p.name.endswith(".tmp")]
    # class layer (whole image per entry)
    fc = render_unit(lazy, tiny, "fc", 2, kinds=("guided",))
    e = lazy.entries("fc", 2)[0]
    want = _reference(tiny, lazy.fitted(e), "fc", (2,), e.box, "guided").astype(int)
    assert np.abs(fc[(0, "guided")].astype(int) - want).max() <= 1


def test_render_refuses_another_model_and_survives_read_only(tiny, tmp_path, monkeypatch):
    write_photos(tmp_path / "data", bad=False)
    scan(tiny, tmp_path / "data", tmp_path / "s", layers="relu2", top_k=2, workers=0, progress=False)
    store = TopKStore.open(tmp_path / "s")
    other = load_model("resnet18", weights="random", device="cpu")
    with pytest.raises(DeepVisError, match="scanned with model 'tiny'"):
        render_unit(store, other, "relu2", 0)
    import deepvis_app.topk.crops as crops_mod

    def deny(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(crops_mod, "atomic_write_png", deny)
    got = list(iter_render_unit(store, tiny, "relu2", 0))
    assert got and not any(c.written for c in got) and store.crop("relu2", 0, 0, "deconv") is None


def test_windowed_crops_equal_full_image_on_efficientnet(tmp_path):
    """Lite0 (static asymmetric same-padding, strides 2): windows at the border and inside, both rules."""
    vm = load_model("efficientnet_lite0", weights="default", device="cpu")
    layer = "_blocks.5._bn1"
    size = vm.input_size
    geom = rf_geometry(vm.net, layer, size)
    assert rf_is_local(vm.net, layer, size) and geom.size_y < size // 2
    img = vm.preprocess.fit(skimage.data.chelsea())
    # channels whose BN scale is positive (a negative one makes the deconv image all zero: exact but dull)
    chans = torch.nonzero(vm.net._blocks[5]._bn1.weight > 0).flatten().tolist()
    positions = [(0, 0, chans[0]), (13, 13, chans[1]), (6, 9, chans[2]), (1, 12, chans[-1])]  # corners, inside
    with torch.no_grad():
        from deepvis_app.probe import Probe

        with Probe(vm.net, [layer], detach=True) as probe:
            vm.net(vm.preprocess.to_tensor(img))
        act = probe[layer][0]
    jobs = [CropJob(layer, c, y, x, rf_box(vm.net, layer, y, x, size), img, 0, float(act[c, y, x]))
            for y, x, c in positions]
    out = {(j, k): crop for j, k, crop in iter_crops(vm, jobs, ("deconv", "guided"))}
    assert len(out) == 2 * len(jobs)
    lit = 0
    for j, job in enumerate(jobs):
        for kind in ("deconv", "guided"):
            want = _reference(vm, img, layer, (job.channel, job.y, job.x), job.box, kind).astype(int)
            got = out[(j, kind)].astype(int)
            assert got.shape == want.shape and np.abs(got - want).max() <= 1, (j, kind)
            lit += int(want.max() > 0)
    assert lit >= 6
    # a wrong scan value (a stale store) makes the window fall back to the whole image: still exact
    bad = [CropJob(layer, 3, 6, 6, rf_box(vm.net, layer, 6, 6, size), img, 0, 1e6)]
    (crop,) = [c for _, k, c in iter_crops(vm, bad, ("guided",))]
    want = _reference(vm, img, layer, (3, 6, 6), bad[0].box, "guided").astype(int)
    assert np.abs(crop.astype(int) - want).max() <= 1


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(nn.functional.adaptive_avg_pool2d(x, 1)))


def test_rf_is_local_detects_global_context():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    se = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _SE(4), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    assert rf_is_local(plain, "2", 32)
    assert rf_geometry(se, "3", 32).size_y == 5  # 3x3 then 3x3: the RF box ignores the global branch ...
    assert not rf_is_local(se, "3", 32)         # ... but a window would change the unit: not local
    assert rf_is_local(se, "0", 32)


def test_crops_capture_stops_early_and_ignores_other_threads():
    """The crops' forward (`probe.Capture(stop=True)`, as `iter_crops` runs it): the net after the layer never
    runs, and a forward another thread runs meanwhile (the live worker) is neither stopped nor captured."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    ran = []
    net[2].register_forward_hook(lambda *_: ran.append(threading.get_ident()))
    x = torch.rand(2, 3, 8, 8)
    with Capture(net, ["1"], example=torch.zeros(1, 3, 8, 8), stop=True) as cap:
        ran.clear()
        assert cap.run(x) is None  # stopped: no network output
        assert ran == []  # the net stopped after layer "1"
        acts = dict(cap.activations)
        torch.testing.assert_close(acts["1"], torch.relu(net[0](x)))
        other = []
        t = threading.Thread(target=lambda: other.append(net(x)))
        t.start()
        t.join()
        assert other[0].shape == (2, 4, 6, 6) and len(ran) == 1  # another thread's forward runs whole
        assert torch.equal(cap["1"], acts["1"])                    # and is not captured
    with pytest.raises(DeepVisError, match="unknown layer"):
        Capture(net, ["nope"], example=torch.zeros(1, 3, 8, 8), stop=True)


def test_topk_render_cli(tiny, tmp_path, capsys):
    import json

    from deepvis_app.cli import main

    write_photos(tmp_path / "data", bad=False)
    out = tmp_path / "store"
    scan(tiny, tmp_path / "data", out, layers="relu2", top_k=2, workers=0, progress=False)
    spec = str(tmp_path / "tiny.toml")
    capsys.readouterr()
    assert main(["topk", str(out), "--layer", "relu2", "--unit", "4", "--render", "--model", spec, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted((c["rank"], c["kind"]) for c in data["crops"]) == [(0, "deconv"), (0, "guided"), (1, "deconv"),
                                                                     (1, "guided")]
    assert all(c["written"] and os.path.isfile(c["path"]) for c in data["crops"])
    store = TopKStore.open(out)
    e = store.entries("relu2", 4)[1]
    want = _reference(tiny, store.fitted(e), "relu2", (4, e.y, e.x), e.box, "deconv").astype(int)
    assert np.abs(store.crop("relu2", 4, 1, "deconv").astype(int) - want).max() <= 1
    assert main(["topk", str(out), "--layer", "relu2", "--unit", "4", "--render"]) == 2  # default model != tiny
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scanned with model 'tiny'" in err[0]


def test_scan_output_errors_are_one_line(tiny, tmp_path):
    write_photos(tmp_path / "data", bad=False)
    (tmp_path / "file").write_text("x")
    kw = dict(layers="relu2", top_k=2, workers=0, progress=False)
    with pytest.raises(DeepVisError, match="not a directory"):
        scan(tiny, tmp_path / "data", tmp_path / "file", **kw)
    with pytest.raises(DeepVisError, match="does not exist"):
        scan(tiny, tmp_path / "data", tmp_path / "no" / "where", **kw)
    with pytest.raises(DeepVisError):
        scan(tiny, tmp_path / "data", "/proc/deepvis-store", **kw)
    with pytest.raises(DeepVisError, match="too large"):
        scan(tiny, tmp_path / "data", tmp_path / "s", **{**kw, "top_k": 1_000_000_000})


def test_plan_is_printed_and_large_stores_ask_when_interactive(monkeypatch, capsys):
    import argparse
    import io

    from deepvis_app.commands.scan import confirm_plan

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    plan = {"entries": 9000, "images": 20, "crop_files": 18000, "eager_kinds": ["deconv", "guided"],
            "estimated_bytes": int(5e9)}
    args = argparse.Namespace(quiet=False, yes=False, out="S")
    monkeypatch.setattr("sys.stdin", TTY())
    monkeypatch.setattr("builtins.input", lambda _prompt: "n")
    with pytest.raises(DeepVisError, match="--resume --yes"):
        confirm_plan(args)(plan)
    assert "9000 entries, 20 images to store, 18000 deconv/guided crop files; store about 5.0 GB" in \
        capsys.readouterr().err
    monkeypatch.setattr("builtins.input", lambda _prompt: "y")
    confirm_plan(args)(plan)
    monkeypatch.setattr("builtins.input", lambda _prompt: pytest.fail("asked despite --yes"))
    confirm_plan(argparse.Namespace(quiet=True, yes=True, out="S"))(plan)
    confirm_plan(args)({**plan, "estimated_bytes": int(2e9)})  # small: no question
    monkeypatch.setattr("sys.stdin", io.StringIO())
    confirm_plan(args)(plan)  # not interactive: no question


@pytest.mark.parametrize("builder, layer", [("channels_last", "act"), ("tokens", "attn")])
def test_crops_of_channels_last_and_token_units(builder, layer, tmp_path):
    """Lazy deconv / guided crops index the unit through the layer's layout: a channels-last unit's crop (windowed:
    its 3x3 field) and a token unit's (the whole frame) equal the rule's gradient of the unit written out by hand
    on the whole image."""
    import layout_nets

    from deepvis_app.attribution import AttributionContext
    from deepvis_app.probe import Probe

    vm = load_model(layout_nets.write_spec(tmp_path, builder), device="cpu")
    by_hand = layout_nets.channels_last_by_hand if builder == "channels_last" else layout_nets.tokens_by_hand
    write_photos(tmp_path / "data", bad=False)
    scan(vm, tmp_path / "data", tmp_path / "s", layers=layer, top_k=2, workers=0, progress=False)
    store = TopKStore.open(tmp_path / "s")
    size = layout_nets.SIZE
    assert rf_is_local(vm.net, layer, size, vm.info(layer)) == (builder == "channels_last")
    for unit in (0, 5):
        got = render_unit(store, vm, layer, unit)
        entries = store.entries(layer, unit)
        assert sorted(got) == sorted((e.rank, k) for e in entries for k in ("deconv", "guided"))
        for e in entries:
            fitted = store.fitted(e)
            x = vm.preprocess.to_tensor(fitted).requires_grad_(True)
            with torch.enable_grad(), AttributionContext(vm.net) as ac, Probe(vm.net, [layer]) as probe:
                vm.net(x)
            unit_value = by_hand(probe[layer])[0, unit, e.y, e.x]
            assert float(unit_value.detach()) == pytest.approx(e.value, rel=1e-4, abs=1e-5)
            for kind in ("deconv", "guided"):
                (g,) = ac.grad(unit_value, x, kind)
                want = crop_box(render_view(g, "norm"), e.box)[0].astype(int)
                crop = got[(e.rank, kind)].astype(int)
                assert crop.shape == want.shape and np.abs(crop - want).max() <= 1 and want.max() > 0, (e, kind)
                if builder == "tokens":
                    assert crop.shape == (size, size, 3)  # a token sees the whole frame
