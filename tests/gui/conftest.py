"""Fixtures for the live window tests: offscreen Qt, one shared model, a short real video, a window factory."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("QT_API", "pyside6")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import pytestqt  # noqa: E402,F401  - a dev dependency: a missing pytest-qt must fail, not skip the GUI suite


@pytest.fixture(scope="session")
def vm():
    from deepvis_app.zoo import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def ref_vm():
    """A second copy of the model for reference computations while a window runs: hooks installed on the live
    worker's model from the test thread would mix with the worker's own captures."""
    from deepvis_app.zoo import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def video_path(tmp_path_factory) -> str:
    """A 24-frame MJPG .avi made of real photos (chelsea, coffee) with a slow pan."""
    import skimage.data

    path = tmp_path_factory.mktemp("video") / "photos.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for photo in (skimage.data.chelsea(), skimage.data.coffee()):
        for i in range(12):
            crop = photo[i * 4:i * 4 + 240 * 1, i * 6:i * 6 + 320]
            crop = cv2.resize(np.ascontiguousarray(crop), (320, 240))
            writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture
def make_window(qtbot, vm, tmp_path):
    """Factory: a shown MainWindow on a source (opened here), paced at a low fps, on the session's model unless
    `model` is given; closed in teardown (its worker checked stopped)."""
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from deepvis_app.gui.main_window import KeyFilter, MainWindow
    from deepvis_app.pipeline import ViewRequest
    from deepvis_app.sources import open_source

    pg.setConfigOptions(imageAxisOrder="row-major")
    windows = []

    def make(source="demo", request: ViewRequest | None = None, fps: float = 8.0, model=None, **kw):
        src = open_source(source) if isinstance(source, str) else source
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        win = MainWindow(model or vm, src, request or ViewRequest(layer="_blocks.3"), fps=fps, device="cpu",
                         settings=settings, **kw)
        win.key_filter = KeyFilter(win)
        QApplication.instance().installEventFilter(win.key_filter)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        qtbot.waitExposed(win)
        windows.append(win)
        return win

    yield make
    for win in windows:
        QApplication.instance().removeEventFilter(win.key_filter)
        win.close()
        win.shutdown()
        assert not win.live.worker.is_alive()
