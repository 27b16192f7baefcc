"""Tool panels say which frame they analysed (issue 30, Misleading views): a thumbnail, the frame number and its
age, marked when the input shows another picture since; occlusion, saliency and cut-out always come from one
frame; the Embedding's "nearest to the camera" follow the camera and say which frame they belong to; the
adversarial panel does not ask for a target it has; the embedding map fills its panel and zooms."""

from __future__ import annotations

import json

import cv2
import numpy as np
import skimage.data
from PySide6.QtCore import QPointF

from deepvis_app.embed import code_of_image
from deepvis_app.embed.codes import CODES_FILE, REPORT_FILE, Codes, resolve_code_layer
from deepvis_app.embed.maps import MAP_FILE, EmbeddingMap, unit_rows
from deepvis_app.sources import FrameSource
from deepvis_app.values import Unit, ViewRequest

from .test_window import WAIT, wait_result


def photos() -> dict[str, np.ndarray]:
    """Two real 224 x 224 photos (the network's input size: shown as they are)."""
    return {"cat": np.ascontiguousarray(cv2.resize(skimage.data.chelsea()[:, 50:350], (224, 224))),
            "coffee": np.ascontiguousarray(cv2.resize(skimage.data.coffee()[:, 100:500], (224, 224)))}


def two_photo_folder(tmp_path) -> str:
    """A folder source: every frame is the other photo."""
    folder = tmp_path / "two"
    folder.mkdir()
    for name, img in photos().items():
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return str(folder)


def which(img: np.ndarray | None, refs: dict[str, np.ndarray]) -> str | None:
    """The photo `img` shows (drawn over or cut out of it: the closest one), None for no image."""
    if img is None:
        return None
    return min(refs, key=lambda k: float(np.abs(img.astype(np.int16) - refs[k].astype(np.int16)).mean()))


class Switch(FrameSource):
    """One photo until `show` says another (a camera turned to a new scene)."""

    name = "switch"
    native_fps = 8.0

    def __init__(self, first: np.ndarray) -> None:
        self.image = first

    def show(self, image: np.ndarray) -> None:
        self.image = image

    def read(self) -> np.ndarray:
        return self.image


def test_where_maps_come_from_one_frame_and_say_which(qtbot, make_window, tmp_path):
    refs = photos()
    win = make_window(two_photo_folder(tmp_path), ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("where")
    feat.window.setValue(56)
    feat.stride.setValue(56)
    seen: list[tuple[str | None, str | None, str | None]] = []
    stale_seen = []

    def look(_res) -> None:
        occ = which(feat.occ.array, refs)
        sal = which(feat.sal.array, refs)
        cut = None if feat.cut.array is None else which(feat.cut.array[feat.segmentation.mask], {
            k: v[feat.segmentation.mask] for k, v in refs.items()})
        seen.append((occ, sal, cut))
        if feat.tag.frame_id is not None:
            stale_seen.append((feat.tag.stale, "older than the input" in feat.tag.text,
                               which(feat.tag.image, refs), occ))

    win.live.painted.connect(look)
    feat.open()
    # several rounds on a source whose every frame is the other photo
    qtbot.waitUntil(lambda: sum(1 for s in stale_seen if s[0]) >= 3 and len({s[2] for s in stale_seen}) == 2
                    and any(sal is not None and sal == occ for occ, sal, _cut in seen), timeout=WAIT * 4)
    shown = [s for s in seen if s[0] is not None]
    for occ, sal, cut in shown:  # saliency and cut-out, when shown, are of the occlusion's picture
        assert sal in (None, occ) and cut in (None, occ), seen
    for stale, said, tag_photo, occ in stale_seen:
        assert tag_photo == occ  # the tag's thumbnail is the frame the maps are of
        assert said == stale  # and it says "older than the input" exactly when the input shows the other photo
    assert f"frame {feat.tag.frame_id}" in feat.tag.text and "s ago" in feat.tag.text


def test_adversarial_and_image_lab_say_their_frame(qtbot, make_window, tmp_path):
    refs = photos()
    win = make_window(two_photo_folder(tmp_path), ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    adv = win.feature("adversarial")
    assert adv.target is not None and "pick a target" not in adv.result.placeholder  # it has one: ostrich
    assert "ostrich" in adv.result.placeholder
    adv.show_panel("adversarial")
    res = win.live.shown
    adv.run_on_frame()
    qtbot.waitUntil(lambda: adv.tag.frame_id == res.frame_id, timeout=WAIT * 2)
    assert which(adv.tag.image, refs) == which(res.image, refs) and adv.tag.isVisible()
    qtbot.waitUntil(lambda: adv.tag.stale and "older than the input" in adv.tag.text, timeout=WAIT)
    adv.shutdown()

    lab = win.feature("imagelab")
    lab.open("invert")
    lab.steps.setValue(2)
    res = win.live.shown
    lab.run()
    assert lab.tag.frame_id == res.frame_id and which(lab.tag.image, refs) == which(res.image, refs)
    qtbot.waitUntil(lambda: lab.tag.stale and "older than the input" in lab.tag.text, timeout=WAIT)
    qtbot.waitUntil(lambda: not lab.tag.stale, timeout=WAIT)  # the same photo again: not older
    lab.shutdown()


def embedding_folder(tmp_path, ref_vm, refs: dict[str, np.ndarray]) -> tuple[str, list[str]]:
    """A `deepvis embed` output of 12 codes: 6 near the cat photo's code, 6 near the coffee's."""
    rng = np.random.default_rng(0)
    codes, paths, thumbs, xy = [], [], [], []
    for k, (name, img) in enumerate(refs.items()):
        code, _p = code_of_image(ref_vm, img)
        for j in range(6):
            codes.append(code * (1 + 0.02 * rng.standard_normal(code.shape)))
            paths.append(f"{name}_{j}.png")
            thumbs.append(cv2.resize(img, (32, 32)))
            xy.append((10.0 * k + rng.random(), rng.random()))
    layer = resolve_code_layer(ref_vm, None)
    c = Codes(paths=paths, codes=np.asarray(codes, np.float32), pred=np.array([285] * 6 + [967] * 6),
              prob=np.full(12, 0.5, np.float32), thumbs=np.asarray(thumbs, np.uint8), layer=layer,
              categories=list(ref_vm.categories))
    out = tmp_path / "embedded"
    out.mkdir()
    c.save(out / CODES_FILE)
    EmbeddingMap(xy=np.asarray(xy, np.float32), units=unit_rows(c.codes), method="tsne").save(out / MAP_FILE)
    (out / REPORT_FILE).write_text(json.dumps({"images": 12}))
    return str(out), paths


def test_embedding_neighbours_follow_the_camera_and_the_map_fills_its_panel(qtbot, make_window, ref_vm, tmp_path):
    refs = photos()
    out, paths = embedding_folder(tmp_path, ref_vm, refs)
    source = Switch(refs["cat"])
    win = make_window(source, ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.resize(1500, 920)
    win.arrange_docks()
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("embedding")
    feat.open()
    feat.embed_folder("unused", out=out)
    qtbot.waitUntil(lambda: feat.map is not None, timeout=WAIT)

    def nearest_are(name: str) -> bool:
        return len(feat.neighbours) == 9 and all(paths[i].startswith(name) for i in feat.neighbours[:6])

    qtbot.waitUntil(lambda: nearest_are("cat"), timeout=WAIT * 2)
    assert which(feat.tag.image, refs) == "cat" and not feat.tag.stale and feat.tag.isVisible()
    looks = []  # at every paint: (tag says older, cat's neighbours shown, the input's photo)
    win.live.painted.connect(lambda r: looks.append((feat.tag.stale, nearest_are("cat"), which(r.image, refs))))
    source.show(refs["coffee"])
    qtbot.waitUntil(lambda: nearest_are("coffee") and not feat.tag.stale, timeout=WAIT * 2)
    assert which(feat.tag.image, refs) == "coffee" and "older" not in feat.tag.text
    # while the cat's neighbours were still shown over the coffee, they said they were older than the input
    assert all(stale for stale, cat, shown in looks if cat and shown == "coffee"), looks

    # the map uses its panel: the points span most of the view, which zooms and pans
    vb = feat.vb
    assert vb.state["mouseEnabled"] == [True, True]
    assert feat.plot.height() >= 150 and feat.plot.width() >= 300
    pts = feat.map.xy
    corners = [vb.mapViewToDevice(QPointF(float(x), float(y)))
               for x, y in (pts.min(axis=0), pts.max(axis=0))]
    span_x = abs(corners[1].x() - corners[0].x())
    span_y = abs(corners[1].y() - corners[0].y())
    assert max(span_x / feat.plot.width(), span_y / feat.plot.height()) >= 0.8
    before = vb.viewRange()
    vb.scaleBy((0.5, 0.5))
    assert vb.viewRange()[0][1] - vb.viewRange()[0][0] < 0.6 * (before[0][1] - before[0][0])
    feat.fit()
    assert np.allclose(vb.viewRange(), before, rtol=0.05, atol=0.05)
