"""Frame sources: each kind opens and yields RGB frames; each bad input gives a one-line SourceError."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import write_rgb

from deepvis_app.errors import ParamError, SourceError
from deepvis_app.sources import (
    CameraSource,
    DemoSource,
    FolderSource,
    ImageSource,
    VideoSource,
    open_source,
    parse_source,
    read_image,
)


def test_parse_source_kinds(tmp_path, chelsea_png, video_file):
    assert parse_source(None).kind == "camera" and parse_source("2").target == "2"
    assert parse_source("camera:1").target == "1"
    assert parse_source("demo").kind == "demo"
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(chelsea_png).kind == "image"
    assert parse_source(video_file).kind == "video"
    with pytest.raises(SourceError, match="source not found"):
        parse_source(str(tmp_path / "missing.mp4x"))
    with pytest.raises(SourceError, match="bad camera index"):
        parse_source("camera:x")


def test_image_source_is_rgb(chelsea_png, photos):
    src = ImageSource(chelsea_png)
    src.open()
    frame = src.read()
    assert frame.dtype == np.uint8 and np.array_equal(frame, photos["chelsea"])  # PNG is lossless, RGB order


def test_video_source_reads_and_loops(video_file):
    src = VideoSource(video_file)
    src.open()
    assert src.native_fps == pytest.approx(10.0)
    frames = [src.read() for _ in range(45)]  # 20-frame clip: loops twice
    assert all(f is not None and f.shape == (120, 160, 3) for f in frames)
    # the clip starts on chelsea (orange-brown cat): red channel dominates blue
    assert frames[0][..., 0].mean() > frames[0][..., 2].mean()
    assert np.abs(frames[0].astype(int) - frames[20].astype(int)).mean() < 3  # looped to the start
    src.close()


def test_folder_source_cycles_and_skips_corrupt(tmp_path, photos):
    write_rgb(tmp_path / "a.png", photos["chelsea"])
    (tmp_path / "sub").mkdir()
    write_rgb(tmp_path / "sub" / "B.JPG", photos["coffee"])
    (tmp_path / "c.jpg").write_bytes(b"garbage")
    src = FolderSource(tmp_path)
    src.open()
    shapes = [src.read().shape for _ in range(4)]
    assert shapes == [photos["chelsea"].shape, photos["coffee"].shape] * 2
    assert [p.name for p in src.skipped] == ["c.jpg"]


def test_demo_source_moves(photos):
    src = DemoSource(size=(160, 120), seconds_per_photo=1.0, fps=10)
    src.open()
    a, b = src.read(), src.read()
    assert a.shape == (120, 160, 3) and not np.array_equal(a, b)


@pytest.mark.parametrize("make, message", [
    (lambda p: read_image(p / "none.png"), "image not found"),
    (lambda p: read_image(p), "not a file"),
    (lambda p: (p / "bad.png").write_bytes(b"\x89PNG broken") and read_image(p / "bad.png"), "corrupt"),
    (lambda p: (p / "bad.mp4").write_bytes(b"nope") and open_source(str(p / "bad.mp4")), "not a readable video"),
    (lambda p: open_source(str(p / "empty_dir_missing")), "source not found"),
    (lambda p: FolderSource(p).open(), "no images"),
    (lambda p: open_source("7"), "camera 7"),
])
def test_bad_sources(tmp_path, make, message):
    with pytest.raises(SourceError, match=message) as err:
        make(tmp_path)
    assert "\n" not in str(err.value)


def test_default_camera_falls_back_to_demo(monkeypatch):
    def fail(self):
        raise SourceError("camera 0 not found")

    monkeypatch.setattr(CameraSource, "open", fail)
    notes: list[str] = []
    src = open_source(None, fallback_to_demo=True, notice=notes.append)
    assert isinstance(src, DemoSource) and "demo" in notes[0] and "camera 0" in notes[0]


def test_decode_image_converts_every_layout_to_rgb_uint8(photos):
    from deepvis_app.sources import decode_image

    rgb = photos["coffee"]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def enc(img, ext=".png"):
        return np.frombuffer(cv2.imencode(ext, img)[1].tobytes(), np.uint8)

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for name, data, want in [
        ("rgb", enc(bgr), rgb),
        ("gray", enc(gray), np.stack([gray] * 3, -1)),
        ("rgba", enc(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)), rgb),
        ("16 bit", enc(bgr.astype(np.uint16) * 257), rgb),
    ]:
        got = decode_image(data)
        assert got.dtype == np.uint8 and got.shape == rgb.shape, name
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
    assert decode_image(np.zeros(0, np.uint8)) is None
    assert decode_image(np.frombuffer(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, np.uint8)) is None


def test_big_images_are_decoded_reduced_and_bombs_refused():
    from deepvis_app.sources import MAX_DECODE_SIDE, decode_image, header_size

    img = np.zeros((300, 9000, 3), np.uint8)
    img[:, 4500:] = 255
    for ext in (".jpg", ".png", ".bmp"):
        data = np.frombuffer(cv2.imencode(ext, img)[1].tobytes(), np.uint8)
        assert header_size(data) == (9000, 300), ext
        out = decode_image(data)
        assert out.shape == (75, 2250, 3) and max(out.shape) <= MAX_DECODE_SIDE, ext  # 9000 / 4
        assert out[30, 100].max() < 20 and out[30, 2200].min() > 230, ext
    # a PNG header claiming 100000 x 100000 pixels: refused from the header, nothing decoded
    head = bytearray(np.frombuffer(cv2.imencode(".png", img[:8, :8])[1].tobytes(), np.uint8))
    head[16:24] = (100000).to_bytes(4, "big") * 2
    assert decode_image(np.frombuffer(bytes(head), np.uint8)) is None


def test_folder_with_no_readable_image_fails_at_open(tmp_path, photos):
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"broken")
    with pytest.raises(SourceError, match="none of the 3 images"):
        FolderSource(tmp_path).open()
    write_rgb(tmp_path / "z_good.png", photos["rocket"])
    src = FolderSource(tmp_path)
    src.open()
    assert src.read().shape == photos["rocket"].shape and len(src.skipped) == 3


def test_capture_refuses_absurd_fps():
    from deepvis_app.pipeline import CaptureThread, LatestSlot

    for fps in (1e-12, -1.0, float("nan"), float("inf"), 1e9):
        with pytest.raises(ParamError, match=r"^fps must be 0 \(as fast as the network takes frames\) or betw") as err:
            CaptureThread(DemoSource(), LatestSlot(), fps=fps)
        assert err.value.param == "fps" and "--" not in str(err.value)  # the core's words; the CLI adds the flag
    CaptureThread(DemoSource(), LatestSlot(), fps=0)  # as fast as taken: fine
