"""Top-k scan, store, resume, live top-k: checked against brute force on real photos and hand-computed RFs."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from deepvis_app.errors import DeepVisError
from deepvis_app.topk import LiveTopK, RunningTopK, TopKStore, crop_box
from deepvis_app.topk.images import list_images
from deepvis_app.topk.scan import scan

# A tiny net with a known receptive field: conv1 (k3 s1 p1) -> RF of (y, x) = rows y-1..y+1;
# conv2 (k3 s2 p1) on conv1 -> rows 2y-2..2y+2. Written to a module so subprocesses (torchrun) can build it.
TINYNET_SRC = '''
from collections import OrderedDict
import torch
from torch import nn


def build(*, pretrained: bool = True) -> nn.Module:
    gen = torch.Generator().manual_seed(1234)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, stride=1, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 6, 3, stride=2, padding=1)), ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(6, 5)),
    ]))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net
'''
SIZE = 32
LAYERS = "conv1,relu2,fc"


def hand_box(layer: str, y: int, x: int) -> tuple[int, int, int, int]:
    if layer == "conv1":
        return (y - 1, x - 1, y + 2, x + 2)
    return (2 * y - 2, 2 * x - 2, 2 * y + 3, 2 * x + 3)


def _fallback_rf_box(net, layer: str, y: int, x: int, input_size: int) -> tuple[int, int, int, int]:
    """Test-only stand-in for deepvis_app.receptive_field (a chain of convs), until the real one is in the tree."""
    import torch.nn as nn

    convs = []
    for name, mod in net.named_children():
        if isinstance(mod, nn.Conv2d):
            convs.append((mod.kernel_size[0], mod.stride[0], mod.padding[0]))
        if name == layer:
            break
    top, bottom, left, right = y, y + 1, x, x + 1
    for k, s, p in reversed(convs):
        top, bottom = top * s - p, (bottom - 1) * s - p + k
        left, right = left * s - p, (right - 1) * s - p + k
    return top, left, bottom, right


def ensure_rf_module() -> None:
    try:
        importlib.import_module("deepvis_app.receptive_field")
    except ModuleNotFoundError:
        mod = types.ModuleType("deepvis_app.receptive_field")
        mod.rf_box = _fallback_rf_box
        sys.modules["deepvis_app.receptive_field"] = mod


def write_tinynet(folder: Path) -> Path:
    (folder / "tinynet_topk.py").write_text(TINYNET_SRC)
    spec = folder / "tiny.toml"
    spec.write_text(f'name = "tiny"\ntitle = "tiny"\nbuilder = "tinynet_topk:build"\ninput_size = {SIZE}\n'
                    'labels = "none"\n')
    return spec




def write_photos(folder: Path, bad: bool = True) -> list[Path]:
    """Real photos (with flips and crops) as jpg/png/bmp in nested folders, plus one corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    photos = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee(),
              "astronaut": skimage.data.astronaut(), "rocket": skimage.data.rocket()}
    written = []
    for i, (name, rgb) in enumerate(photos.items()):
        small = cv2.resize(rgb, (rgb.shape[1] * 96 // rgb.shape[0], 96), interpolation=cv2.INTER_AREA)
        variants = {f"{name}.png": small, f"sub/{name}_flip.JPG": small[:, ::-1],
                    f"sub/deeper/{name}_crop.bmp": small[10:80, 5:90]}
        if i % 2:
            variants[f"{name}_ud.jpeg"] = small[::-1]
        for rel, img in variants.items():
            path = folder / rel
            cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
            written.append(path)
    (folder / "notes.txt").write_text("not an image")
    if bad:
        (folder / "x.jpg").write_bytes(b"\x00garbage\xff" * 40)
    return written


def brute_force(vm, paths: list[str], layer: str, k: int):
    """Per image, one un-batched forward; rank by (value desc, index asc)."""
    from deepvis_app.probe import Probe

    rows = []
    for i, path in enumerate(paths):
        bgr = cv2.imread(path)
        if bgr is None:
            continue
        x = vm.preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        with torch.no_grad(), Probe(vm.net, [layer], detach=True) as probe:
            vm.net(x)
        act = probe[layer][0].numpy()
        flat = act.reshape(act.shape[0], -1)
        arg = flat.argmax(1)
        w = act.shape[2] if act.ndim == 3 else 1
        rows.append((i, flat.max(1), arg // w, arg % w))
    c = rows[0][1].shape[0]
    out = []
    for ch in range(c):
        cands = sorted((-r[1][ch], r[0], int(r[2][ch]), int(r[3][ch])) for r in rows)[:k]
        out.append([(-v, i, y, x) for v, i, y, x in cands])
    return out


def test_list_images_recursive_any_case(tmp_path):
    written = write_photos(tmp_path / "data")
    found = list_images(tmp_path / "data")
    assert sorted(found) == found
    assert set(found) == {str(p) for p in written} | {str(tmp_path / "data" / "x.jpg")}
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\ndata/coffee.png\n" + str(written[0]) + "\n")
    assert list_images(listing) == [str(tmp_path / "data" / "coffee.png"), str(written[0])]
    with pytest.raises(DeepVisError):
        list_images(tmp_path / "nope")


def test_running_topk_tie_break_and_merge_order_independent():
    torch.manual_seed(0)
    acts = torch.randint(0, 4, (12, 3, 2, 2)).float()  # many exact ties
    ids = torch.arange(12)
    whole = RunningTopK(3, 5)
    whole.update(acts, ids)
    parts = [RunningTopK(3, 5) for _ in range(3)]
    for r in range(3):  # strided shards in reverse order, merged in a different order
        sel = ids[r::3].flip(0)
        parts[r].update(acts[sel], sel)
    merged = parts[2]
    merged.merge(parts[0])
    merged.merge(parts[1])
    for name, tensor in whole.state().items():
        assert torch.equal(tensor, merged.state()[name]), name
    vals = acts.flatten(2).max(2).values  # [N, C]
    for ch in range(3):
        expect = sorted(range(12), key=lambda i: (-vals[i, ch].item(), i))[:5]
        assert whole.ids[ch].tolist() == expect


def test_scan_equals_brute_force_and_counts_bad(tiny, tmp_path):
    write_photos(tmp_path / "data")
    out = tmp_path / "store"
    report = scan(tiny, tmp_path / "data", out, layers=LAYERS, top_k=4, batch_size=3, workers=1,
                  attribution=(), progress=False)
    paths = list_images(tmp_path / "data")
    assert report["bad_count"] == 1 and report["bad"][0]["path"].endswith("x.jpg")
    assert report["images_scanned"] == len(paths) - 1
    store = TopKStore.open(out)
    assert store.layers == ["conv1", "relu2", "fc"] and store.top_k == 4
    assert store.index["kinds"] == ["input"] and store.lazy_kinds == ["deconv", "guided"]
    assert store.kinds == ["input", "deconv", "guided"]  # what a viewer can show (two of them on demand)
    assert json.loads((out / "report.json").read_text())["bad_count"] == 1
    for layer in store.layers:
        expect = brute_force(tiny, paths, layer, 4)
        for unit, want in enumerate(expect):
            got = store.entries(layer, unit)
            assert [(e.image_id, e.y, e.x) for e in got] == [(i, y, x) for _, i, y, x in want]
            np.testing.assert_allclose([e.value for e in got], [v for v, _, _, _ in want], rtol=1e-5, atol=1e-6)
            assert all(e.path == paths[e.image_id] for e in got)
    assert store.entries("conv1", 99) == []
    assert not (out.parent / "store.partial").exists()
    assert not list(out.glob("checkpoint*"))


def test_rf_crops_match_hand_computation(tiny, tmp_path):
    write_photos(tmp_path / "data", bad=False)
    out = tmp_path / "store"
    scan(tiny, tmp_path / "data", out, layers=LAYERS, top_k=3, batch_size=4, workers=0, progress=False,
         attribution=("deconv", "guided"))
    store = TopKStore.open(out)
    assert store.kinds == ["input", "deconv", "guided"] and store.lazy_kinds == []
    used = {e.image_id for layer in store.layers for u in range(store.channels(layer))
            for e in store.entries(layer, u)}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"i{i:08d}.png" for i in sorted(used)]
    assert not list(out.glob("crops/*/*_input.png"))  # input crops are cut from the stored image on view
    fc_entries = sum(len(store.entries("fc", u)) for u in range(store.channels("fc")))
    assert len(list(out.glob("crops/L002/*"))) == 2 * fc_entries  # deconv + guided per entry, no input crop
    seen_padded = False
    for layer in ("conv1", "relu2"):
        for unit in range(store.channels(layer)):
            for e in store.entries(layer, unit):
                assert e.box == hand_box(layer, e.y, e.x)
                fitted = store.fitted(e)
                np.testing.assert_array_equal(fitted, tiny.preprocess.fit(store.image(e)))
                t, lft, b, r = e.box
                expect = np.zeros((b - t, r - lft, 3), np.uint8)
                for yy in range(t, b):
                    for xx in range(lft, r):
                        if 0 <= yy < SIZE and 0 <= xx < SIZE:
                            expect[yy - t, xx - lft] = fitted[yy, xx]
                np.testing.assert_array_equal(store.crop(layer, unit, e.rank), expect)
                assert e.padded == (t < 0 or lft < 0 or b > SIZE or r > SIZE)
                seen_padded |= e.padded
                for kind in ("deconv", "guided"):
                    assert store.crop(layer, unit, e.rank, kind).shape == expect.shape
    assert seen_padded  # border maxima happen with 32 px inputs; the zero padding was exercised
    # the guided crop is the guided-backprop image of that neuron, cropped to its box
    from deepvis_app.attribution import attribute, render_view

    # (batched per image in the scan, so allow one grey level of float noise against the one-at-a-time call)
    for layer, unit, rank in (("relu2", 1, 0), ("relu2", 4, 2), ("conv1", 3, 1), ("fc", 0, 0)):
        e = store.entries(layer, unit)[rank]
        where = (unit, e.y, e.x) if layer != "fc" else (unit,)
        for kind in ("deconv", "guided"):
            attr = attribute(tiny.net, tiny.preprocess(store.image(e)), layer=layer, unit=where, method=kind)
            want = crop_box(render_view(attr, "norm"), e.box)[0].astype(int)
            got = store.crop(layer, unit, rank, kind).astype(int)
            assert np.abs(got - want).max() <= 1 and want.max() > 0, (layer, unit, kind)
    # fully connected layer: whole image
    e = store.entries("fc", 2)[0]
    assert e.box == (0, 0, SIZE, SIZE) and not e.padded
    np.testing.assert_array_equal(store.crop("fc", 2, 0), store.fitted(e))
    assert store.crop("fc", 2, 99) is None


def _store_arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for f in sorted((path / "layers").glob("*.npz")):
        with np.load(f) as data:
            out[f.stem] = {k: data[k] for k in data.files}
    return out


def test_resume_after_interruption_equals_clean_run(tiny, tmp_path):
    write_photos(tmp_path / "data")
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    kw = dict(layers=LAYERS, top_k=3, batch_size=2, workers=0, progress=False, checkpoint_every=1,
              attribution=("guided",))
    scan(tiny, tmp_path / "data", clean, **kw)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny, tmp_path / "data", broken, stop_after_batches=3, **kw)
    assert not broken.exists()  # nothing half-written where the store goes
    with pytest.raises(DeepVisError, match="unfinished scan"):
        TopKStore.open(broken)
    with pytest.raises(DeepVisError, match="different top_k"):
        scan(tiny, tmp_path / "data", broken, resume=True, **{**kw, "top_k": 5})
    report = scan(tiny, tmp_path / "data", broken, resume=True, **kw)
    assert report["resumed"] and report["bad_count"] == 1
    a, b = _store_arrays(clean), _store_arrays(broken)
    assert a.keys() == b.keys()
    for key in a:
        for name in a[key]:
            np.testing.assert_array_equal(a[key][name], b[key][name])
    assert json.loads((clean / "images.json").read_text()) == json.loads((broken / "images.json").read_text())
    sa, sb = TopKStore.open(clean), TopKStore.open(broken)
    for kind in ("input", "guided"):
        np.testing.assert_array_equal(sa.crop("relu2", 0, 1, kind), sb.crop("relu2", 0, 1, kind))
    assert sa.lazy_kinds == sb.lazy_kinds == ["deconv"]


def test_scan_refuses_to_clobber_and_bad_layer(tiny, tmp_path):
    write_photos(tmp_path / "data", bad=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(DeepVisError, match="not a top-k store"):
        scan(tiny, tmp_path / "data", tmp_path / "precious", layers="conv1", progress=False, workers=0)
    with pytest.raises(DeepVisError, match="unknown layer"):
        scan(tiny, tmp_path / "data", tmp_path / "s", layers="nope", progress=False, workers=0)


def test_topk_cli(tiny, tmp_path, capsys):
    from deepvis_app.cli import main

    write_photos(tmp_path / "data")
    out = tmp_path / "store"
    scan(tiny, tmp_path / "data", out, layers=LAYERS, top_k=2, batch_size=8, workers=0, attribution=(),
         progress=False)
    capsys.readouterr()
    assert main(["topk", str(out), "--layer", "relu2", "--unit", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    entries = TopKStore.open(out).entries("relu2", 3)
    assert [(d["path"], d["value"], d["y"], d["x"], tuple(d["box"])) for d in data["entries"]] == \
        [(e.path, e.value, e.y, e.x, e.box) for e in entries]
    assert main(["topk", str(out), "--layer", "relu2", "--unit", "3"]) == 0
    assert "relu2 unit 3: 2 entries" in capsys.readouterr().out
    assert main(["topk", str(out), "--layer", "relu2", "--unit", "60"]) == 2
    assert main(["topk", str(tmp_path), "--unit", "0"]) == 2
    assert "not a top-k store" in capsys.readouterr().err


def test_live_topk_bounded_and_saved(tiny, tmp_path, capsys):
    from deepvis_app.probe import Probe
    from deepvis_app.receptive_field import rf_box

    frames = [tiny.preprocess.fit(img) for img in (skimage.data.chelsea(), skimage.data.coffee(),
                                                   skimage.data.astronaut(), skimage.data.rocket())]
    frames += [f[::-1].copy() for f in frames] + [f[:, ::-1].copy() for f in frames]
    live = LiveTopK("relu2", [0, 2, 5], k=2, rf_fn=lambda y, x: rf_box(tiny.net, "relu2", y, x, SIZE))
    acts = []
    for fid, img in enumerate(frames):
        with torch.no_grad(), Probe(tiny.net, ["relu2"], detach=True) as probe:
            tiny.net(tiny.preprocess.to_tensor(img))
        acts.append(probe["relu2"][0])
        live.update(fid, img, probe["relu2"][0])
        assert live.image_count <= 3 * 2
    held = {e.image_id for u in (0, 2, 5) for e in live.entries(u)}
    assert live.image_ids == held  # unreferenced frames were dropped
    for unit in (0, 2, 5):
        vals = [(-float(a[unit].max()), fid) for fid, a in enumerate(acts)]
        want = [fid for _, fid in sorted(vals)[:2]]
        got = live.entries(unit)
        assert [e.image_id for e in got] == want
        e = got[0]
        assert e.box == hand_box("relu2", e.y, e.x)
        a = acts[e.image_id][unit]
        assert float(a[e.y, e.x]) == float(a.max())
        np.testing.assert_array_equal(live.crop(unit, 0), crop_box(frames[e.image_id], e.box)[0])
    assert live.entries(1) == []
    out = live.save(tmp_path / "live", model={"name": "tiny"})
    store = TopKStore.open(out)
    assert store.layers == ["relu2"] and store.kinds == ["input"]
    for unit in (0, 2, 5):
        assert [(e.image_id, e.value, e.y, e.x, e.box) for e in store.entries(unit=unit, layer="relu2")] == \
            [(e.image_id, e.value, e.y, e.x, e.box) for e in live.entries(unit)]
        np.testing.assert_array_equal(store.crop("relu2", unit, 0), live.crop(unit, 0))
        np.testing.assert_array_equal(store.image(store.entries("relu2", unit)[0]),
                                      frames[live.entries(unit)[0].image_id])
    assert store.entries("relu2", 1) == []
    from deepvis_app.cli import main

    assert main(["topk", str(out), "--unit", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["entries"]) == 2
    live.clear()
    assert live.image_count == 0 and live.entries(0) == []


def test_progress_bar_reports_rate_and_quiet():
    import io

    from deepvis_app.topk.images import Progress

    stream = io.StringIO()
    bar = Progress(10, "scan", stream=stream)
    bar.update(4, force=True)
    bar.close()
    text = stream.getvalue()
    assert "4/10" in text and "img/s" in text and text.endswith("\n")
    quiet = io.StringIO()
    q = Progress(10, enabled=False, stream=quiet)
    q.update(3, force=True)
    q.close()
    assert quiet.getvalue() == ""


def test_no_crops_store_has_entries_but_no_pixels(tiny, tmp_path):
    write_photos(tmp_path / "data", bad=False)
    kw = dict(layers="relu2", top_k=2, batch_size=8, workers=0, attribution=(), progress=False)
    scan(tiny, tmp_path / "data", tmp_path / "full", **kw)
    scan(tiny, tmp_path / "data", tmp_path / "bare", crops=False, **kw)
    full, bare = TopKStore.open(tmp_path / "full"), TopKStore.open(tmp_path / "bare")
    assert bare.kinds == [] and not (tmp_path / "bare" / "crops").exists()
    assert not (tmp_path / "bare" / "images").exists()
    for unit in range(full.channels("relu2")):
        got = [(e.image_id, e.value, e.box) for e in bare.entries("relu2", unit)]
        assert got == [(e.image_id, e.value, e.box) for e in full.entries("relu2", unit)]
        for e in full.entries("relu2", unit):
            assert full.crop("relu2", unit, e.rank).shape == (5, 5, 3)
            assert bare.crop("relu2", unit, e.rank) is None  # the source photos are never opened by a reader
    assert bare.crop("relu2", 0, 0, "guided") is None


@pytest.mark.parametrize("builder, layers", [("channels_last", "lin,act"), ("tokens", "mix,attn")])
def test_scan_reads_units_through_the_layout(builder, layers, tmp_path):
    """A channels-last map (ConvNeXt's inner layers) and a token layer (a ViT's): the scan's units are the
    layer's channels at positions of its maps, as written out by hand; token units see the whole frame."""
    import layout_nets

    from deepvis_app.probe import Probe
    from deepvis_app.zoo import load_model

    vm = load_model(layout_nets.write_spec(tmp_path, builder), device="cpu")
    write_photos(tmp_path / "data", bad=False)
    out = tmp_path / "store"
    scan(vm, tmp_path / "data", out, layers=layers, top_k=3, batch_size=4, workers=0, progress=False)
    store = TopKStore.open(out)
    paths = list_images(tmp_path / "data")
    by_hand = layout_nets.channels_last_by_hand if builder == "channels_last" else layout_nets.tokens_by_hand
    names = layers.split(",")
    maps = {name: [] for name in names}
    for path in paths:
        x = vm.preprocess(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        with torch.no_grad(), Probe(vm.net, names, detach=True) as probe:
            vm.net(x)
        for name in names:
            maps[name].append(by_hand(probe[name])[0])
    for name in names:
        c, h, w = maps[name][0].shape
        assert (c, h, w) == ((6, SIZE, SIZE) if builder == "channels_last" else (8, 8, 8))
        assert store.channels(name) == c and store.layer_info(name)["layout"] == vm.info(name).layout.value
        for unit in range(c):
            cands = []
            for i, m in enumerate(maps[name]):
                flat = int(m[unit].argmax())
                cands.append((-float(m[unit].max()), i, flat // w, flat % w))
            want = sorted(cands)[:3]
            got = store.entries(name, unit)
            assert [(e.image_id, e.y, e.x) for e in got] == [(i, y, x) for _, i, y, x in want]
            np.testing.assert_allclose([e.value for e in got], [-v for v, _, _, _ in want], rtol=1e-5, atol=1e-6)
            for e in got:  # the conv's 3x3 field for the map; the whole frame for a token
                expect = hand_box("conv1", e.y, e.x) if builder == "channels_last" else (0, 0, SIZE, SIZE)
                assert e.box == expect
