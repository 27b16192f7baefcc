"""`deepvis atlas`: a static site from a real scan store (the top-k tests' tiny net on real photos), checked against
the store and hand computations; atomic and resumable under a kill; in a real browser (Debian's chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np
import pytest
import torch

from deepvis_app.atlas import build_atlas
from deepvis_app.atlas.stats import activation_stats, unit_labels, unit_stats
from deepvis_app.probe import Probe
from deepvis_app.topk import TopKStore
from deepvis_app.topk.scan import scan
from deepvis_app.topk.store import image_relpath, read_rgb

LABELS = ["cat", "dog", "fish", "bird", "car"]  # the tiny net's fc has 5 outputs
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/atlas_shots")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """(model, store path, spec path, folder): the tiny net (with class labels) scanned over real photos, with
    deconv / guided crops stored for every entry."""
    from test_topk import ensure_rf_module, write_photos, write_tinynet

    from deepvis_app.zoo import load_model

    folder = tmp_path_factory.mktemp("atlas")
    ensure_rf_module()
    spec = write_tinynet(folder)
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    spec.write_text(spec.read_text().replace('labels = "none"', 'labels = "labels.txt"'))
    sys.path.insert(0, str(folder))
    sys.modules.pop("tinynet_topk", None)
    try:
        vm = load_model(spec, weights="default", device="cpu")
        write_photos(folder / "data")
        scan(vm, folder / "data", folder / "store", layers="conv1,relu2,fc", top_k=3, batch_size=8, workers=0,
             progress=False, attribution=("deconv", "guided"))
        yield vm, folder / "store", spec, folder
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def site(tiny_store):
    vm, store, _spec, folder = tiny_store
    stages = []
    report = build_atlas(store, folder / "site", vm=vm, on_progress=lambda p: stages.append(p.stage))
    return report, stages


def test_site_pages_images_and_labels(tiny_store, site):
    vm, store_path, _spec, folder = tiny_store
    report, stages = site
    out = folder / "site"
    store = TopKStore.open(store_path)
    assert report.layers == ["conv1", "relu2", "fc"] and report.units == 4 + 6 + 5 and report.stats_from == "images"
    assert stages[0] == "stats" and stages[-1] == "publish" and {"images", "pages"} <= set(stages)
    assert not (folder / "site.partial").exists() and json.loads((out / "atlas.json").read_text())["layers"]
    for layer, n in (("conv1", 4), ("relu2", 6), ("fc", 5)):
        assert (out / layer / "index.html").is_file()
        assert sorted(int(p.stem) for p in (out / layer).glob("*.html") if p.stem != "index") == list(range(n))
    # a unit page at its stable URL: the store's top-k, best first, its crops as WebP thumbnails
    page = (out / "relu2" / "4.html").read_text()
    entries = store.entries("relu2", 4)
    for e in entries:
        assert f"#{e.rank + 1} &middot; value {e.value:.4g}" in page
    assert 'loading="lazy"' in page and "u00004_r000_deconv.webp" in page and "u00004_r000_guided.webp" in page
    thumb = cv2.cvtColor(cv2.imread(str(out / "relu2/c/u00004_r000_input.webp")), cv2.COLOR_BGR2RGB)
    crop = store.crop("relu2", 4, 0, "input")
    assert thumb.shape == crop.shape and np.abs(thumb.astype(int) - crop.astype(int)).mean() < 12
    guided = cv2.cvtColor(cv2.imread(str(out / "relu2/c/u00004_r000_guided.webp")), cv2.COLOR_BGR2RGB)
    assert np.abs(guided.astype(int) - store.crop("relu2", 4, 0, "guided").astype(int)).mean() < 12
    original = read_rgb(out / f"img/i{entries[0].image_id:08d}.png")  # the linked original is lossless
    assert np.array_equal(original, store.fitted(entries[0]))
    # labels: a class-layer unit is its class; a unit feeding the classifier names the class its weight raises most
    assert "class 3: bird" in (out / "fc" / "3.html").read_text()
    weight = vm.net.fc.weight.detach()
    best = LABELS[int(weight[:, 4].argmax())]
    assert f"raises most: {best} ({float(weight[:, 4].max()):+.2f})" in page
    assert "raises most" not in (out / "conv1" / "2.html").read_text()
    # neighbours: the same unit one layer up and down, the next unit
    assert 'href="../conv1/4.html"' not in page and 'href="../conv1/index.html"' in page  # conv1 has 4 units
    assert 'href="../fc/4.html"' in page and 'href="5.html"' in page


def test_statistics_match_a_forward_per_image(tiny_store):
    vm, store_path, _spec, _folder = tiny_store
    store = TopKStore.open(store_path)
    ids = sorted(int(p.stem[1:]) for p in (store_path / "images").glob("i*.png"))
    stats = activation_stats(vm, store, ["conv1", "relu2"], ids, batch_size=5)
    for k, i in enumerate(ids):  # one unbatched forward per image, by hand
        x = vm.preprocess.to_tensor(read_rgb(store.inside(image_relpath(i))))
        with torch.no_grad(), Probe(vm.net, ["relu2"], detach=True) as probe:
            vm.net(x)
        act = probe["relu2"][0].numpy()
        np.testing.assert_allclose(stats["relu2/max"][k], act.reshape(6, -1).max(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["relu2/mean"][k], act.reshape(6, -1).mean(1), rtol=1e-5, atol=1e-6)
    maxes, means = stats["relu2/max"][:, 2], stats["relu2/mean"][:, 2]
    top = np.array([e.value for e in store.entries("relu2", 2)])
    s = unit_stats(maxes, means, top)
    assert s.images == len(ids) and sum(s.hist) == len(ids)
    assert s.mean == pytest.approx(means.mean()) and s.max_mean == pytest.approx(maxes.mean())
    assert s.selectivity == pytest.approx((top.mean() - maxes.mean()) / maxes.std(), rel=1e-5)
    assert top[0] == pytest.approx(maxes.max(), rel=1e-5)  # the store's best value is the best over its images
    assert set(unit_labels(vm, ["conv1", "relu2", "fc"])) == {"relu2", "fc"}


def test_another_model_is_noticed_not_described(tiny_store, tmp_path):
    from deepvis_app.zoo import load_model

    _vm, store, spec, _folder = tiny_store
    other = load_model(spec, weights="default", device="cpu")
    with torch.no_grad():
        other.net.conv1.weight.mul_(1.5)  # another network: no unit gives its stored best value back
    notices: list[str] = []
    report = build_atlas(store, tmp_path / "site", vm=other, on_notice=notices.append)
    assert report.stats_from == "top-k" and any("does not give the store's values back" in n for n in notices)
    page = (tmp_path / "site" / "relu2" / "4.html").read_text()
    assert "raises most" not in page and "mean of the top-3" in page


def test_layer_page_sorts_by_statistics(tiny_store, site):
    _vm, _store, _spec, folder = tiny_store
    html = (folder / "site" / "relu2" / "index.html").read_text()
    tiles = re.findall(r'data-unit="(\d+)" data-mean="([^"]+)" data-sel="([^"]+)"', html)
    assert [int(u) for u, _m, _s in tiles] == list(range(6))
    assert all(np.isfinite(float(m)) and np.isfinite(float(s)) for _u, m, s in tiles)
    assert '<option value="mean">mean activation</option>' in html and "<script>" in html


def _run_cli(args: list[str], folder: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
           "DEEPVIS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deepvis_app", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=folder)


def test_killed_build_keeps_the_old_site_and_resumes(tiny_store, tmp_path):
    vm, store, spec, folder = tiny_store
    out = tmp_path / "site"
    build_atlas(store, out, vm=vm, layers="relu2")
    old_index = (out / "index.html").read_text()
    base = ["atlas", str(store), "--out", str(out), "--model", str(spec), "--quiet"]
    # killed while writing pages: the old site stays whole, the staging folder waits for the next run
    killed = _run_cli(base, folder, {"DEEPVIS_ATLAS_KILL_AT": "pages"})
    assert killed.returncode == 137, killed.stderr
    assert (out / "index.html").read_text() == old_index and not (out / "conv1").exists()
    assert (tmp_path / "site.partial" / "conv1" / "index.html").is_file()
    resumed = build_atlas(store, out, vm=vm)  # the same store, layers and model as the killed command
    assert resumed.resumed and resumed.kept > 0
    assert (out / "conv1" / "3.html").is_file() and (out / "fc" / "4.html").is_file()
    assert not (tmp_path / "site.partial").exists()
    # killed between moving the old site away and putting the new one in place: the next run puts it back first
    died = _run_cli([*base, "--layers", "fc"], folder, {"DEEPVIS_ATLAS_KILL_AT": "publish"})
    assert died.returncode == 137 and not out.exists() and len(list(tmp_path.glob("site.old-*"))) == 1
    again = build_atlas(store, out, vm=vm, layers="fc")
    assert not again.resumed and (out / "fc" / "index.html").is_file() and not (out / "conv1").exists()
    assert not list(tmp_path.glob("site.old-*"))


def test_cli_refuses_what_is_not_an_atlas(tiny_store, tmp_path, capsys):
    from deepvis_app.cli import main

    _vm, store, spec, _folder = tiny_store
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    assert main(["atlas", str(store), "--out", str(precious), "--model", str(spec), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not an atlas" in err and len(err.strip().splitlines()) == 1
    assert (precious / "thesis.txt").read_text() == "do not delete"
    assert main(["atlas", str(store), "--out", str(tmp_path / "s"), "--model", str(spec), "--layers", "nope"]) == 2
    assert capsys.readouterr().err.startswith("deepvis: error: --layers names 'nope'")
    assert main(["atlas", str(tmp_path / "no-store"), "--out", str(tmp_path / "s")]) == 2
    assert "not a top-k store" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_optimized_images_come_from_the_cache_once(tiny_store, tmp_path, isolated_cache, monkeypatch):
    vm, store, _spec, _folder = tiny_store
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_STEPS", "2")
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_SIZE", "32")
    first = build_atlas(store, tmp_path / "site", vm=vm, layers="relu2", optimize=True)
    assert first.optimized_made == 6 and first.optimized_shown == 6
    assert len(list(isolated_cache.rglob("*.png"))) == 6
    again = build_atlas(store, tmp_path / "site", vm=vm, layers="relu2", optimize=True)
    assert again.optimized_made == 0 and again.optimized_shown == 6  # nothing computed twice
    opt = read_rgb(tmp_path / "site" / "relu2" / "opt" / "u00003.png")
    assert opt.shape == (32, 32, 3)
    assert 'src="../relu2/opt/u00003.webp"' in (tmp_path / "site" / "relu2" / "index.html").read_text()


def _chromium() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


def test_site_in_a_real_browser(tiny_store, site):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium found (/usr/bin/chromium or on PATH): `make browser` installs it with apt as root")
    from playwright import sync_api  # a dev dependency: missing, it fails here rather than skipping
    _vm, _store, _spec, folder = tiny_store
    out = folder / "site"
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name, rel in (("index", "index.html"), ("layer", "relu2/index.html"), ("unit", "relu2/4.html")):
            page.goto((out / rel).as_uri())
            page.wait_for_load_state("load")
            for k in range(page.locator("img").count()):  # lazy images load once scrolled to
                page.locator("img").nth(k).scroll_into_view_if_needed()
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
            widths = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
            assert widths and all(w > 0 for _src, w in widths), widths
            links = page.eval_on_selector_all("a[href], img[src], link[href]",
                                              "els => els.map(e => e.href || e.src)")
            for url in links:
                path = Path(unquote(urlparse(url).path))
                assert urlparse(url).scheme == "file" and path.is_file(), url
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            if name == "layer":  # the inline sorter: tiles by mean activation, highest first
                page.select_option("#sort", "mean")
                means = page.eval_on_selector_all("#tiles .tile", "els => els.map(e => +e.dataset.mean)")
                assert means == sorted(means, reverse=True) and len(means) == 6
        browser.close()
    assert errors == []
