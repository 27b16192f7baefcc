"""Codes, maps and pictures: extraction equals a plain forward + pooling, resume (also after a real SIGKILL)
equals a clean run, t-SNE keeps known groups together, nearest neighbours by cosine, grid snapping, the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepvis_app import load_model
from deepvis_app.cli import main
from deepvis_app.embed import (
    Codes,
    EmbeddingMap,
    extract_codes,
    iter_codes,
    load_result,
    neighbour_purity,
    scatter_picture,
    snap_to_grid,
)
from deepvis_app.embed.codes import PARTS_DIR
from deepvis_app.errors import DeepVisError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def r18():
    return load_model("resnet18", weights="random", device="cpu")


def _crops(photos, names, per, seed=0):
    """`per` random square crops (some flipped) of each photo: (name, rgb) pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        a = photos[name]
        h, w = a.shape[:2]
        for _ in range(per):
            s = int(min(h, w) * rng.uniform(0.55, 0.9))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            c = a[y:y + s, x:x + s]
            out.append((name, np.ascontiguousarray(c[:, ::-1] if rng.random() < 0.5 else c)))
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, photos):
    """5 decodable images (small, so the forward dominates nothing) and one broken file."""
    d = tmp_path_factory.mktemp("imgs")
    for i, (name, rgb) in enumerate(_crops(photos, ["chelsea", "coffee", "rocket", "astronaut", "coffee"], 1)):
        cv2.imwrite(str(d / f"{i}_{name}.png"), cv2.cvtColor(cv2.resize(rgb, (96, 96)), cv2.COLOR_RGB2BGR))
    (d / "9_broken.jpg").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="module")
def clean_codes(r18, small_set):
    """Codes of `small_set` from one uninterrupted in-memory run (batches of 2)."""
    return extract_codes(r18, small_set, batch_size=2, progress=False)


@torch.no_grad()
def _reference(vm, paths):
    """A hand-written resnet18 forward: the pooled penultimate code, layer3 pooled, top-1."""
    from deepvis_app.sources import read_image

    net = vm.net
    x = torch.cat([vm.preprocess(read_image(p)) for p in paths])
    h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    l3 = net.layer3(net.layer2(net.layer1(h)))
    code = torch.flatten(net.avgpool(net.layer4(l3)), 1)
    logits = net.fc(code)
    return code.numpy(), l3.mean(dim=(2, 3)).numpy(), logits.argmax(1).numpy(), torch.softmax(logits, 1).max(1)[0]


def test_extraction_equals_direct_forward_and_pooling(r18, small_set, clean_codes, tmp_path):
    res = clean_codes
    good = sorted(str(p) for p in small_set.glob("[0-4]_*.png"))
    assert res.paths == good and list(res.bad) == [str(small_set / "9_broken.jpg")]
    code, l3, pred, prob = _reference(r18, good)
    assert res.layer == "fc:input" and res.codes.shape == (5, 512)
    np.testing.assert_allclose(res.codes, code, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(res.pred, pred)
    np.testing.assert_allclose(res.prob, prob.numpy(), rtol=1e-4)
    assert res.thumbs.shape == (5, 32, 32, 3) and res.thumbs.dtype == np.uint8
    deeper = extract_codes(r18, good[:3], layer="layer3", batch_size=3, thumb=0, progress=False)
    np.testing.assert_allclose(deeper.codes, l3[:3], rtol=1e-4, atol=1e-5)
    assert deeper.thumbs is None
    res.save(tmp_path / "codes.npz")
    back = Codes.load(tmp_path / "codes.npz")
    np.testing.assert_array_equal(back.codes, res.codes)
    np.testing.assert_array_equal(back.thumbs, res.thumbs)
    assert back.paths == good and back.bad == res.bad and back.layer == res.layer and back.categories[0] == "tench"


def test_abort_then_resume_equals_clean_run(r18, small_set, clean_codes, tmp_path):
    clean = clean_codes
    stop = threading.Event()
    steps = []
    for p in iter_codes(r18, small_set, tmp_path / "o", batch_size=2, checkpoint_every=1, abort=stop):
        steps.append(p)
        if p.done >= 2:
            stop.set()
    assert not any(p.finished for p in steps) and steps[-1].done == 2
    parts = list((tmp_path / "o" / PARTS_DIR).glob("part-*.npz"))
    assert len(parts) == 1
    with pytest.raises(DeepVisError, match="different layer"):
        extract_codes(r18, small_set, tmp_path / "o", layer="layer3", resume=True, progress=False)
    resumed = extract_codes(r18, small_set, tmp_path / "o", batch_size=2, resume=True, progress=False)
    np.testing.assert_array_equal(resumed.codes, clean.codes)
    np.testing.assert_array_equal(resumed.pred, clean.pred)
    assert resumed.paths == clean.paths and resumed.bad == clean.bad
    assert Codes.load(tmp_path / "o" / "codes.npz").paths == clean.paths and not (tmp_path / "o" / PARTS_DIR).exists()


def test_notices_go_to_the_callback_not_stderr(r18, small_set, tmp_path, capsys):
    """What a run decides on its own (discard an interrupted extraction, nothing to resume) reaches `on_notice`;
    the core prints nothing (the CLI prints the notices as `deepvis: ...` lines)."""
    stop = threading.Event()
    for p in iter_codes(r18, small_set, tmp_path / "o", batch_size=2, checkpoint_every=1, abort=stop):
        if p.done >= 2:
            stop.set()
    notes: list[str] = []
    extract_codes(r18, small_set, tmp_path / "o", batch_size=2, progress=False, on_notice=notes.append)
    assert notes == [f"discarding the interrupted extraction in {tmp_path / 'o' / PARTS_DIR} (a resumed run would "
                     "continue it)"]
    extract_codes(r18, small_set, tmp_path / "p", batch_size=2, progress=False, resume=True, on_notice=notes.append)
    assert notes[1] == f"nothing to resume in {tmp_path / 'p'}; extracting from the start"
    assert capsys.readouterr().err == ""
    code = main(["embed", str(small_set), "--out", str(tmp_path / "p"), "--resume", "--quiet", "--perplexity", "2",
                 "--model", "resnet18", "--weights", "random", "--device", "cpu", "--batch-size", "2"])
    err = capsys.readouterr().err.splitlines()
    assert code == 0 and err[0] == f"deepvis: nothing to resume in {tmp_path / 'p'}; extracting from the start"
    assert err[1].startswith(f"wrote {tmp_path / 'p'}: 5 images (1 unreadable skipped)") and len(err) == 2


def test_sigkill_mid_extraction_then_resume_equals_clean(small_set, clean_codes, tmp_path):
    clean = clean_codes
    out, marker = tmp_path / "out", tmp_path / "killed"
    env = {**os.environ, "DEEPVIS_KILL_AT": "embed-codes", "DEEPVIS_KILL_MARKER": str(marker),
           "OMP_NUM_THREADS": "1", "DEEPVIS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "deepvis_app", "embed", str(small_set), "--out", str(out), "--model", "resnet18",
           "--weights", "random", "--device", "cpu", "--batch-size", "2", "--checkpoint-every", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never reached its first checkpoint"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    parts = out / PARTS_DIR
    assert len(list(parts.glob("part-*.npz"))) == 1 and not (out / "codes.npz").exists()
    # A write cut off by the kill leaves only a temp file: never read, removed on resume.
    (parts / ".part-r0-000000002.npz.x1y2.tmp").write_bytes(b"PK\x03\x04 half a file")
    code = main(["embed", str(small_set), "--out", str(out), "--model", "resnet18", "--weights", "random",
                 "--device", "cpu", "--batch-size", "2", "--resume", "--quiet", "--no-pictures"])
    assert code == 0
    back = Codes.load(out / "codes.npz")
    np.testing.assert_array_equal(back.codes, clean.codes)
    assert back.paths == clean.paths and not parts.exists()


def _clusters(n_per=15, k=4, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def test_tsne_keeps_groups_and_is_trustworthy():
    from sklearn.manifold import trustworthiness

    x, labels = _clusters()
    m = EmbeddingMap.fit(x, perplexity=10, seed=0)
    strict, mean = neighbour_purity(m.xy, labels, k=10)
    assert strict == 1.0 and mean == 1.0 and m.xy.shape == (60, 2)
    assert trustworthiness(x, m.xy, n_neighbors=10) > 0.9
    assert m.settings["perplexity"] == 10 and m.settings["library"].startswith("openTSNE")
    again = EmbeddingMap.fit(x, perplexity=10, seed=0)
    np.testing.assert_array_equal(again.xy, m.xy)  # deterministic for a seed
    small = EmbeddingMap.fit(x[:10], perplexity=30)
    assert small.settings["perplexity"] == 3 and small.settings["perplexity_asked"] == 30


def test_nearest_locate_and_transform(tmp_path):
    x, labels = _clusters()
    m = EmbeddingMap.fit(x, perplexity=10)
    q = x[3] + 0.01
    idx, sims = m.nearest(q, k=9)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    naive = sorted(range(len(x)), key=lambda i: -float(u[i] @ (q / np.linalg.norm(q))))[:9]
    assert list(idx) == naive and sims[0] == pytest.approx(float(u[naive[0]] @ (q / np.linalg.norm(q))), abs=1e-5)
    assert 3 not in m.nearest(x[3], k=5, exclude=3)[0]
    new = x[labels == 2].mean(axis=0)  # a new code in the middle of group 2
    xy, nn_idx, _ = m.locate(new, k=9)
    group = m.xy[labels == 2]
    assert (labels[nn_idx] == 2).all()
    assert (group.min(0) <= xy).all() and (xy <= group.max(0)).all()
    placed = m.transform(new[None], optimize=True)
    assert placed.shape == (1, 2) and np.linalg.norm(placed[0] - group.mean(0)) < np.linalg.norm(np.ptp(m.xy, 0)) / 4
    m.save(tmp_path / "map.npz")
    loaded = EmbeddingMap.load(tmp_path / "map.npz", codes=x)
    np.testing.assert_array_equal(loaded.transform(new[None]), m.transform(new[None]))
    with pytest.raises(DeepVisError, match="loaded from disk"):
        loaded.transform(new[None], optimize=True)
    with pytest.raises(DeepVisError, match="another layer"):
        m.nearest(np.ones(5))


def test_snap_to_grid_exact_and_approximate():
    r, c = np.divmod(np.arange(12), 4)
    xy = np.stack([c, -r], 1).astype(float)  # each point on its own cell centre (map y up, rows down)
    cells, cols, rows, how = snap_to_grid(xy, cols=4, rows=3)
    assert how == "linear_sum_assignment" and (cols, rows) == (4, 3)
    np.testing.assert_array_equal(cells, np.stack([r, c], 1))
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 2))
    for limit in (2500, 0):
        cells, cols, rows, _ = snap_to_grid(pts, exact_limit=limit)
        flat = cells[:, 0] * cols + cells[:, 1]
        assert len(np.unique(flat)) == 500 and cols * rows >= 500 and cells.min() >= 0
        assert np.corrcoef(cells[:, 0], -pts[:, 1])[0, 1] > 0.9  # rows follow y (top row: largest y)
        assert np.corrcoef(cells[:, 1], pts[:, 0])[0, 1] > 0.8  # columns follow x


def test_scatter_picture_many_points_draws_a_readable_subset():
    rng = np.random.default_rng(0)
    n = 20000
    thumbs = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)
    pic, drawn = scatter_picture(rng.normal(size=(n, 2)), thumbs)
    assert pic.shape[0] == pic.shape[1] <= 4096 and 0 < drawn < n
    few, drawn_few = scatter_picture(rng.normal(size=(3, 2)) * [[1, 1]] + [[0, 0], [10, 0], [0, 10]],
                                     thumbs[:3])
    assert drawn_few == 3 and few.shape == (512, 512, 3)


def test_cli_embed_writes_codes_csv_pictures_and_groups_photos(capsys, tmp_path, photos):
    data = tmp_path / "data"
    data.mkdir()
    for i, (name, rgb) in enumerate(_crops(photos, ["chelsea", "coffee", "astronaut", "rocket"], 4)):
        cv2.imwrite(str(data / f"{name}_{i}.jpg"), cv2.cvtColor(cv2.resize(rgb, (160, 160)), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    code = main(["embed", str(data), "--out", str(out), "--device", "cpu", "--batch-size", "8", "--json",
                 "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["images"] == 16 and report["code_layer"] == "_fc:input"
    assert report["code_dims"] == 1280 and report["embedding"]["perplexity"] == 5
    assert set(report["files"]) == {"codes", "map", "csv", "map_picture", "grid_picture"}
    rows = list(csv.DictReader((out / "embedding.csv").open()))
    assert [r["path"] for r in rows] == sorted(str(p) for p in data.glob("*.jpg"))
    assert set(rows[0]) == {"path", "x", "y", "grid_row", "grid_col", "class_index", "class", "probability"}
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    source = np.array([Path(r["path"]).name.split("_")[0] for r in rows])
    assert neighbour_purity(xy, source, k=3)[0] == 1.0  # crops of one photo lie together
    cats = {r["class"] for r in rows if r["path"].split("/")[-1].startswith("chelsea")}
    assert cats & {"tabby", "tiger cat", "Egyptian cat"}
    assert cv2.imread(str(out / "grid.png")).shape == (4 * 32, 4 * 32, 3)
    assert cv2.imread(str(out / "map.png")) is not None
    codes, m = load_result(out)
    assert len(codes) == 16 and np.allclose(m.xy, xy, atol=1e-4)
    # Re-embedding from the codes file needs no model run.
    code = main(["embed", str(out / "codes.npz"), "--out", str(tmp_path / "again"), "--perplexity", "3",
                 "--no-pictures", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and again["embedding"]["perplexity"] == 3 and (tmp_path / "again" / "codes.npz").exists()


@pytest.mark.parametrize("args,msg", [(["--method", "foo"], "unknown --method 'foo'"),
                                      (["--perplexity", "0"],
                                       "argument --perplexity: must be a number above 0 and at most 10000, got 0"),
                                      (["--layer", "nope"], "unknown layer 'nope'"),
                                      (["--batch-size", "0"],
                                       "argument --batch-size: must be between 1 and 4096, got 0")])
def test_cli_embed_bad_inputs_one_line(capsys, tmp_path, small_set, args, msg):
    out = tmp_path / "out"
    code = main(["embed", str(small_set), "--out", str(out), "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1 and not out.exists()


def test_cli_embed_missing_data_and_umap_hint(capsys, tmp_path, small_set):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["embed", str(empty), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no images" in err and err.count("\n") == 1
    try:
        import umap  # noqa: F401
    except ImportError:
        code = main(["embed", str(small_set), "--out", str(tmp_path / "o"), "--method", "umap"])
        err = capsys.readouterr().err
        assert code == 2 and "pip install 'deepvis[umap]'" in err and err.count("\n") == 1
        with pytest.raises(DeepVisError, match="umap-learn"):
            EmbeddingMap.fit(np.random.default_rng(0).normal(size=(20, 8)), method="umap")


def test_live_frame_code_and_embed_job(r18, small_set, clean_codes, tmp_path):
    from deepvis_app.embed import code_of_image, iter_embed
    from deepvis_app.sources import read_image

    code, probs = code_of_image(r18, read_image(clean_codes.paths[2]))  # the live path: one frame, one forward
    np.testing.assert_allclose(code, clean_codes.codes[2], rtol=1e-4, atol=1e-5)
    assert int(probs.argmax()) == int(clean_codes.pred[2]) and probs.sum() == pytest.approx(1, abs=1e-4)
    steps = list(iter_embed(r18, small_set, tmp_path / "o", batch_size=2, perplexity=5, pictures=False))
    assert [s.stage for s in steps] == ["codes"] * 5 + ["map", "done"]
    assert [s.done for s in steps[:5]] == [0, 2, 4, 6, 6] and steps[0].total == 6
    done = steps[-1]
    assert done.report["images"] == 5 and done.map.xy.shape == (5, 2)
    idx, sims = done.map.nearest(code, k=3)
    assert idx[0] == 2 and sims[0] == pytest.approx(1, abs=1e-4)


TINY_SRC = """
import torch
from torch import nn


def build(pretrained=False):
    torch.manual_seed(0)  # the same weights in every process
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
"""


def test_torchrun_two_processes_equal_single(small_set, tmp_path, monkeypatch):
    (tmp_path / "tinyembed.py").write_text(TINY_SRC)
    spec = tmp_path / "tinyembed.toml"
    spec.write_text('name = "tinyembed"\nbuilder = "tinyembed:build"\ninput_size = 32\nlabels = "none"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    vm = load_model(spec, device="cpu")
    single = extract_codes(vm, small_set, batch_size=2, progress=False)
    assert single.layer == "6:input" and single.codes.shape == (5, 16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "deepvis_app", "embed",
                           str(small_set), "--out", str(tmp_path / "dist"), "--model", str(spec), "--device", "cpu",
                           "--batch-size", "2", "--quiet", "--perplexity", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = Codes.load(tmp_path / "dist" / "codes.npz")
    assert dist.paths == single.paths and dist.bad == single.bad and dist.settings["world_size"] == 2
    np.testing.assert_allclose(dist.codes, single.codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dist.pred, single.pred)
    assert (tmp_path / "dist" / "embedding.csv").read_text().count("\n") == 6


def test_code_tap_only_taps_its_own_thread_and_job_keeps_grad_mode(r18, small_set):
    from deepvis_app.embed import CodeTap

    x = torch.zeros(1, 3, 224, 224)
    for layer in (None, "layer3"):
        tap = CodeTap(r18, layer)
        with torch.no_grad(), tap:
            other = threading.Thread(target=lambda: r18.net(x))  # e.g. the live worker's forward
            other.start()
            other.join()
            with pytest.raises(DeepVisError, match="no output"):
                tap.code  # noqa: B018
            r18.net(x)
            assert tap.code.shape == (1, 512 if layer is None else 256)
    jobs = iter_codes(r18, small_set, batch_size=2)
    next(jobs), next(jobs)  # suspended between batches
    assert torch.is_grad_enabled()
    jobs.close()
