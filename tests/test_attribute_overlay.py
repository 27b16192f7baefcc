"""`deepvis attribute --overlay`: the map as an inferno heat overlay on the fitted input image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from deepvis_app import load_model
from deepvis_app.cli import main
from deepvis_app.render import overlay_heat


def test_overlay_heat_by_hand() -> None:
    """Zero map: the image itself, bit for bit; value m: rgb*(1 - a*m) + inferno(m)*a*m, computed by hand."""
    rgb = np.full((4, 5, 3), (200, 100, 50), np.uint8)
    m = np.zeros((4, 5), np.float32)
    assert np.array_equal(overlay_heat(rgb, m), rgb)
    m[1, 2], m[3, 4] = 1.0, 0.5
    out = overlay_heat(rgb, m, alpha=0.8)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0, ::-1]
    top = lut[255].astype(float)  # inferno's bright end, pale yellow
    assert top[0] > 240 and top[2] < 200
    assert np.array_equal(out[1, 2], np.round(np.array([200, 100, 50]) * 0.2 + top * 0.8).astype(np.uint8))
    half = lut[128].astype(float)
    assert np.array_equal(out[3, 4], np.round(np.array([200, 100, 50]) * 0.6 + half * 0.4).astype(np.uint8))
    untouched = np.ones((4, 5), bool)
    untouched[1, 2] = untouched[3, 4] = False
    assert np.array_equal(out[untouched], rgb[untouched])


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    img = d / "cat.png"
    rgb = skimage.data.chelsea()
    cv2.imwrite(str(img), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    fitted = load_model("efficientnet_lite0", weights="default", device="cpu").preprocess.fit(rgb)
    return img, fitted


@pytest.mark.parametrize("method,layer", [("saliency", "_blocks.3"), ("gradcam", "_blocks.10")])
def test_cli_overlay_hot_where_the_map_is(method: str, layer: str, cat, tmp_path, capsys) -> None:
    img, fitted = cat
    common = ["--layer", layer, "--unit", "5", "--method", method, "--device", "cpu"]
    npy, png = tmp_path / "m.npy", tmp_path / "o.png"
    assert main(["attribute", str(img), *common, "--out", str(npy)]) == 0
    assert main(["attribute", str(img), *common, "--overlay", "--out", str(png)]) == 0
    assert "overlay (norm)" in capsys.readouterr().out
    over = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert over.shape == fitted.shape == (224, 224, 3)
    mag = np.abs(np.load(npy)).sum(0)
    low, high = mag <= 1e-3 * mag.max(), mag >= 0.5 * mag.max()
    assert low.sum() > 500 and high.sum() > 20, (low.sum(), high.sum())
    diff = np.abs(over.astype(int) - fitted.astype(int)).max(axis=2)
    assert diff[low].max() <= 2  # ~0 map: the photo as the network sees it
    assert diff[high].mean() > 30  # hot: visibly covered by heat


def test_cli_overlay_bad_combinations(cat, tmp_path, capsys) -> None:
    img, _ = cat
    common = ["--layer", "_blocks.3", "--unit", "5", "--method", "gradcam", "--device", "cpu", "--overlay"]
    cases = [["--out", str(tmp_path / "m.npy")], ["--view", "raw", "--out", str(tmp_path / "a.png")],
             ["--view", "gray", "--out", str(tmp_path / "b.png")]]
    for extra in cases:
        assert main(["attribute", str(img), *common, *extra]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("deepvis: error: --"), err
    assert list(tmp_path.iterdir()) == []
