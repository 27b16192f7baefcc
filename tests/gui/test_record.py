"""Recording the window: `r` starts and stops an MP4 that OpenCV decodes, as many frames as the clock says, each
one the window as it was drawn; the REC mark shows meanwhile; closing the window (`--exit-after`) finishes the file;
a bad path is a banner, not a crash."""

from __future__ import annotations

import time

import cv2
import numpy as np
from PySide6.QtCore import Qt

from deepvis_app.gui.features.record import grab_rgb, painted_rate
from deepvis_app.pipeline import ViewRequest

WAIT = 30_000


def decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_painted_rate_from_paint_times():
    assert painted_rate([0.0, 0.1, 0.2, 0.3, 0.4]) == 10
    assert painted_rate([0.0, 1.0]) == 10  # too few paints: the default
    assert painted_rate([0.0, 0.001, 0.002, 0.003]) == 60  # clamped


def test_recorder_places_frames_by_the_clock(tmp_path):
    from deepvis_app.gui.features.record import Recorder

    colors = [np.full((48, 65, 3), c, np.uint8) for c in (30, 120, 200, 250)]
    rec = Recorder(tmp_path / "clock.mp4", 10, (65, 48))
    assert rec.size == (64, 48)  # even sides
    t0 = rec.t0
    # painted at 0 s, 0.12 s, 0.16 s (ahead of the clock: dropped) and 0.95 s (late: held for the missing frames)
    assert [rec.add(img, now=t0 + t) for img, t in zip(colors, (0.0, 0.12, 0.16, 0.95), strict=True)] == [0, 1, -1, 9]
    assert rec.finish() == tmp_path / "clock.mp4" and not list(tmp_path.glob(".*tmp*"))
    means = [round(float(f.mean())) for f in decode(tmp_path / "clock.mp4")]
    assert len(means) == 10 and abs(means[0] - 30) <= 3 and abs(means[1] - 120) <= 3
    assert all(abs(m - 250) <= 3 for m in means[2:])  # 0.2 .. 0.9 s show the frame painted at 0.95 s


def test_r_records_the_window_to_mp4(qtbot, make_window, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_RECORDINGS", str(tmp_path / "videos"))
    win = make_window("demo", ViewRequest(layer="_blocks.3"), fps=8.0)
    rec = win.feature("record")
    qtbot.waitUntil(lambda: win.live.shown is not None and len(rec.paint_times) >= 4, timeout=WAIT)

    moments: list[tuple[int, np.ndarray]] = []  # (video frame index, the window grabbed at that moment)
    rec.frame_written.connect(lambda index, _rgb: moments.append((index, grab_rgb(win))))
    t0 = time.monotonic()
    qtbot.keyClick(win.feature("grid").pane.view.viewport(), Qt.Key.Key_R)
    t1 = time.monotonic()
    assert rec.recording
    assert rec.button.text().startswith("\u25cf REC") and "c0392b" in rec.button.styleSheet()
    qtbot.waitUntil(lambda: len(moments) >= 12 and time.monotonic() - t0 > 2.5, timeout=WAIT)
    fps, video_size = rec.recorder.fps, rec.recorder.size
    assert fps == painted_rate(rec.paint_times) or 1 <= fps <= 60
    t2 = time.monotonic()
    qtbot.keyClick(win.feature("grid").pane.view.viewport(), Qt.Key.Key_R)
    t3 = time.monotonic()
    assert not rec.recording and "REC" not in rec.button.text()
    path = rec.last_path
    assert path is not None and path.parent == tmp_path / "videos" and path.suffix == ".mp4"
    assert not list(path.parent.glob(".*.tmp*"))  # the temp file was renamed into place

    frames = decode(path)
    # the video lasts as long as the recording did: frames = recorded seconds x the painted rate (within 10%)
    low, high = (t2 - t1) * fps, (t3 - t0) * fps
    assert 0.9 * low - 1 <= len(frames) <= 1.1 * high + 1, (len(frames), low, high, fps)
    assert frames[0].shape[:2] == (video_size[1], video_size[0])
    # a frame in the middle is the window as grabbed at the same moment (mp4v is lossy: close, not equal)
    index, grabbed = moments[len(moments) // 2]
    h, w = frames[0].shape[:2]
    ref = grabbed[:h, :w].astype(np.float32)
    diff = np.abs(frames[index].astype(np.float32) - ref).mean()
    other = np.abs(np.full_like(ref, ref.mean()) - ref).mean()
    print(f"frame vs grab: mean abs diff {diff:.2f} (flat image: {other:.2f}); {len(frames)} frames at {fps} fps")
    assert diff < 6.0 and diff < other / 4, (diff, other)
    # the red REC mark is in the picture (the status bar's button, #c0392b)
    red = (np.abs(frames[index].astype(int) - (192, 57, 43)).sum(axis=2) < 60).sum()
    assert red > 100, red


def test_close_finishes_the_recording(qtbot, make_window, tmp_path):
    win = make_window("demo", ViewRequest(layer="_blocks.3"), fps=8.0)
    rec = win.feature("record")
    qtbot.waitUntil(lambda: win.live.shown is not None, timeout=WAIT)
    target = tmp_path / "demo.mp4"
    assert rec.start(target)
    qtbot.wait(1200)
    from deepvis_app.gui.app import schedule_exit

    schedule_exit(win, snapshot=None, exit_after=0.2)  # what `--record FILE --exit-after S` does
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=WAIT)
    assert target.is_file() and len(decode(target)) >= 5


def test_bad_record_path_is_a_banner(qtbot, make_window, tmp_path):
    win = make_window("demo", ViewRequest(layer="_blocks.3"), fps=8.0)
    rec = win.feature("record")
    assert not rec.start(tmp_path / "clip.avi")
    assert not rec.start(tmp_path / "missing" / "clip.mp4")
    assert not rec.recording and "record" in win.ctx.last_error and "does not exist" in win.ctx.last_error
