"""Gamma values the combo does not list, the camera menu listing only cameras that exist, and mirroring."""

from __future__ import annotations

import cv2
import numpy as np

from deepvis_app.gui.sources_gui import camera_indices
from deepvis_app.pipeline import ViewRequest

from .test_window import wait_result


def test_gamma_combo_shows_an_unlisted_value(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3", gamma=0.6))
    box = win.feature("grid").pane.gamma_box
    assert box.currentText() == "gamma 0.6" and win.live.request.gamma == 0.6
    box.setCurrentIndex(box.findText("gamma 0.5"))
    assert win.live.request.gamma == 0.5
    box.setCurrentIndex(box.findText("gamma 0.6"))
    assert win.live.request.gamma == 0.6
    assert box.count() == 5  # added once


def test_camera_indices_on_linux(tmp_path):
    dev, sys_dir = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for name in ("video0", "video1", "video2", "video-meta", "vcs"):
        (dev / name).touch()
    for name, index in (("video0", "0"), ("video1", "1"), ("video2", "0")):  # video1: video0's metadata node
        (sys_dir / name).mkdir(parents=True)
        (sys_dir / name / "index").write_text(index + "\n")
    assert camera_indices(str(dev), str(sys_dir), platform="linux") == [0, 2]
    assert camera_indices(str(tmp_path / "none"), str(sys_dir), platform="linux") == []
    assert camera_indices(platform="darwin") == [0, 1, 2, 3]


def test_camera_menu_lists_existing_cameras(qtbot, make_window, monkeypatch):
    from deepvis_app.gui.features import sources

    win = make_window("demo")
    monkeypatch.setattr(sources, "camera_indices", lambda: [])
    win.menus["&Source"].aboutToShow.emit()
    texts = [a.text() for a in win.menus["&Source"].actions()]
    (none,) = [a for a in win.menus["&Source"].actions() if a.text() == "no cameras found"]
    assert not none.isEnabled() and not any(t.startswith("Camera") for t in texts)
    monkeypatch.setattr(sources, "camera_indices", lambda: [0, 2])
    win.menus["&Source"].aboutToShow.emit()
    texts = [a.text() for a in win.menus["&Source"].actions()]
    assert [t for t in texts if t.startswith("Camera") or t == "no cameras found"] == ["Camera 0", "Camera 2"]
    assert "Demo (photos)" in texts and "Mirror" in texts


def test_mirror_flips_the_input(qtbot, make_window, tmp_path):
    import skimage.data

    photo = np.ascontiguousarray(skimage.data.astronaut()[40:264, 100:324])  # 224 x 224: fitted as is
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    win = make_window(str(path))
    wait_result(qtbot, win, lambda r: True)
    qtbot.waitUntil(lambda: win.feature("input").pane.canvas.has_image)
    assert np.array_equal(win.feature("input").pane.canvas.array, photo)
    win.feature("sources").mirror_action.trigger()
    assert win.state.mirror and win.feature("sources").mirror_action.isChecked()
    wait_result(qtbot, win, lambda r: np.array_equal(r.image, photo[:, ::-1]))
    qtbot.waitUntil(lambda: np.array_equal(win.feature("input").pane.canvas.array, photo[:, ::-1]))
    assert not np.array_equal(win.feature("input").pane.canvas.array, photo)
    win.feature("sources").mirror_action.trigger()
    wait_result(qtbot, win, lambda r: np.array_equal(r.image, photo))


def test_squeezed_toolbar_combos_end_in_an_ellipsis(qtbot):
    """Qt clips a squeezed combo's text mid-letter ("whole l"); ours elides it ("whole l...") and keeps the item."""
    from PySide6.QtWidgets import QComboBox

    from deepvis_app.gui.widgets.combo import compact_combo

    ours, plain = compact_combo(["whole layer", "per channel"]), QComboBox()
    plain.addItems(["whole layer", "per channel"])
    for box in (ours, plain):
        qtbot.addWidget(box)
        box.show()
    ours.resize(ours.sizeHint())
    assert not ours.elided()
    for box in (ours, plain):
        box.resize(ours.minimumWidth(), ours.sizeHint().height())
    qtbot.wait(10)
    assert ours.elided() and ours.currentText() == "whole layer"
    narrow = ours.grab().toImage()
    clipped = plain.grab().toImage()
    assert narrow.size() == clipped.size() and narrow != clipped  # the label is painted shortened, not clipped
