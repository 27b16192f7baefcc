"""Frame sources: webcam, video file, image folder, single image and a moving demo made of real photos.

Every source yields RGB uint8 HxWx3 frames from `read()`; `None` means "no frame now" (a camera that
vanished, a video that cannot be decoded) and the capture thread decides what to do about it.
"""

from __future__ import annotations

import glob
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Library noise is not for users: where a source fails we say so in one line ourselves. FFmpeg prints
# "moov atom not found" & co. to fd 2 from C, and reads its level once, when OpenCV first opens a capture;
# OpenCV reads its own at import. setdefault, so OPENCV_LOG_LEVEL=DEBUG / OPENCV_FFMPEG_LOGLEVEL=48 still work.
_USER_CV_LOG_LEVEL = "OPENCV_LOG_LEVEL" in os.environ
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402 - after the environment defaults above
import numpy as np  # noqa: E402

from .errors import SourceError  # noqa: E402
from .resources import DEMO_PHOTOS  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"}
DEFAULT_FPS = 30.0
# Frames wider or taller than this are decoded at 1/2, 1/4 or 1/8 scale (JPEG/PNG decoders do it while reading),
# so a 12000 x 12000 photo costs ~70 MB instead of 430 MB + copies; networks see 224-ish pixels anyway.
MAX_DECODE_SIDE = 4096
# More pixels than this (after the reduced decode) is refused outright: a decompression bomb, not a photo.
MAX_PIXELS = 64_000_000

if not _USER_CV_LOG_LEVEL and hasattr(cv2, "setLogLevel"):
    cv2.setLogLevel(0)  # cv2 may have been imported before us (fileio), so its import-time level may be the default


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG/JPEG/GIF/BMP header without decoding pixels; None where unknown."""
    b = data[:1 << 16].tobytes()
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    if b[:6] in (b"GIF87a", b"GIF89a") and len(b) >= 10:
        return int.from_bytes(b[6:8], "little"), int.from_bytes(b[8:10], "little")
    if b[:2] == b"BM" and len(b) >= 26:
        w, h = (int.from_bytes(b[k:k + 4], "little", signed=True) for k in (18, 22))
        return abs(w), abs(h)
    if b[:2] == b"\xff\xd8":  # JPEG: walk the segments to the first start-of-frame marker
        i = 2
        while i + 9 < len(b):
            if b[i] != 0xFF:
                return None
            marker, length = b[i + 1], int.from_bytes(b[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(b[i + 7:i + 9], "big"), int.from_bytes(b[i + 5:i + 7], "big")
            i += 2 + length
    return None


def _png_damaged(data: np.ndarray) -> bool:
    """A PNG whose chunk chain ends before IEND, or a critical chunk (IHDR, PLTE, IDAT, IEND) whose CRC is wrong:
    libpng fails on both and prints "libpng error: ..." straight to fd 2 (no log level reaches it), so such a
    file is refused before decoding, as it would be after. Ancillary chunks with a bad CRC are left alone:
    libpng skips those and decodes the image."""
    if data.size < 8 or data[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
        return False
    buf = memoryview(np.ascontiguousarray(data).reshape(-1)).cast("B")
    i, n = 8, len(buf)
    while i + 8 <= n:
        length = int.from_bytes(buf[i:i + 4], "big")
        kind = bytes(buf[i + 4:i + 8])
        end = i + 8 + length
        if end + 4 > n:
            return True
        if kind[:1].isupper() and zlib.crc32(buf[i + 4:end]) != int.from_bytes(buf[end:end + 4], "big"):
            return True
        if kind == b"IEND":
            return False
        i = end + 4
    return True


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: np.ndarray, *, max_side: int = MAX_DECODE_SIDE) -> np.ndarray | None:
    """Encoded bytes -> RGB uint8 HxWx3 (gray, RGBA, 16-bit, CMYK and palette images converted), or None.

    Big images are decoded reduced (JPEG decoders skip the pixels; others are shrunk right after decoding), so
    no multi-GB buffer is allocated; a size the header cannot tell is left to OpenCV's own pixel limit."""
    if data.size == 0 or _png_damaged(data):
        return None
    factor = 1
    size = header_size(data)
    if size is not None:
        w, h = size
        while max(w, h) > max_side * factor and factor < 8:
            factor *= 2
        if (w // factor) * (h // factor) > MAX_PIXELS:
            return None
    flag = _REDUCED[factor]
    try:
        img = cv2.imdecode(data, flag)
    except cv2.error:
        return None
    if img is None or img.size == 0:
        return None
    if img.dtype != np.uint8:  # IMREAD_COLOR already gives 8 bits; guard the other paths
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(np.iinfo(img.dtype).max)))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8; `SourceError` with one line for missing, unreadable or corrupt files."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"image not found: {p}")
    if not p.is_file():
        raise SourceError(f"not a file: {p}")
    if not os.access(p, os.R_OK):
        raise SourceError(f"image not readable (permission denied): {p}")
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as err:
        raise SourceError(f"image not readable ({err.strerror or err}): {p}") from None
    img = decode_image(data)
    if img is None:
        raise SourceError(f"not a readable image (corrupt, unsupported or too large): {p}")
    return img


def fit_image(rgb: np.ndarray, size: int, crop: str = "center") -> np.ndarray:
    """Fit a frame to a network's square input: centre square crop (or `stretch`), then resize to size x size.

    The one implementation shared by the model's preprocessing, dataset scans and store readers, so a box
    measured on the network input always refers to the same pixels.
    """
    h, w = rgb.shape[:2]
    if crop == "center" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        rgb = rgb[top:top + s, left:left + s]
    if rgb.shape[0] != size or rgb.shape[1] != size:
        shrinking = rgb.shape[0] > size
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


class FrameSource:
    """Base class: `open()` may raise `SourceError`; `read()` returns a frame or None; `close()` is idempotent."""

    name = "source"
    native_fps: float | None = None
    #: a live device may come back after `read()` returned None (the capture thread re-opens it)
    reconnectable = False

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _CaptureSource(FrameSource):
    """What cameras and video files share: an OpenCV capture, BGR->RGB frames, the rate it reports."""

    _cap: cv2.VideoCapture | None = None

    def _adopt(self, cap: cv2.VideoCapture) -> None:
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if 1 <= fps <= 240 else DEFAULT_FPS
        self._cap = cap

    def _grab(self) -> np.ndarray | None:
        ok, frame = self._cap.read() if self._cap is not None else (False, None)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok and frame is not None else None

    def read(self) -> np.ndarray | None:
        return self._grab()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraSource(_CaptureSource):
    """A webcam by OpenCV index."""

    reconnectable = True

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.name = f"camera {index}"

    def open(self) -> None:
        if os.name == "posix" and not os.path.exists(f"/dev/video{self.index}") and not glob.glob("/dev/video*"):
            raise SourceError(f"camera {self.index} not found (no /dev/video* devices on this machine)")
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.index} could not be opened (no such camera, or it is in use)")
        self._adopt(cap)


class VideoSource(_CaptureSource):
    """A video file, looped at its end."""

    def __init__(self, path: str | os.PathLike, *, loop: bool = True) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.loop = loop

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video not found: {self.path}")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"video not readable (permission denied): {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        ok, _ = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise SourceError(f"not a readable video (corrupt or unsupported format): {self.path}")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._adopt(cap)

    def read(self) -> np.ndarray | None:
        frame = self._grab()
        if frame is None and self.loop and self._cap is not None:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            frame = self._grab()
        return frame


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursive, any-case extensions, sorted for a stable order."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


class FolderSource(FrameSource):
    """Cycles through the images of a folder; corrupt files are skipped (and counted), not fatal."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = f"{self.path.name}/"
        self.native_fps = DEFAULT_FPS
        self.skipped: list[Path] = []
        self._files: list[Path] = []
        self._first: np.ndarray | None = None
        self._i = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"folder not found: {self.path}")
        self._files = list_images(self.path)
        if not self._files:
            raise SourceError(f"no images in {self.path} (looked for {', '.join(sorted(IMAGE_EXTS))})")
        # Fail at start, not in the capture loop: find the first image that decodes (skipping broken ones).
        for path in self._files:
            try:
                self._first = read_image(path)
                break
            except SourceError:
                self.skipped.append(path)
                self._i += 1
        else:
            raise SourceError(f"none of the {len(self._files)} images in {self.path} could be read")

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            first, self._first = self._first, None
            self._i += 1
            return first
        for _ in range(len(self._files)):
            path = self._files[self._i % len(self._files)]
            self._i += 1
            try:
                return read_image(path)
            except SourceError:
                if path not in self.skipped:
                    self.skipped.append(path)
        raise SourceError(f"none of the images in {self.path} could be read")


class ImageSource(FrameSource):
    """One image, repeated (a still scene)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.native_fps = DEFAULT_FPS
        self._img: np.ndarray | None = None

    def open(self) -> None:
        self._img = read_image(self.path)

    def read(self) -> np.ndarray | None:
        return self._img


class DemoSource(FrameSource):
    """Real photos (scikit-image's samples, shipped in the package's assets) with a slow pan and zoom, so the
    network sees something like a moving camera."""

    name = "demo"

    def __init__(self, *, size: tuple[int, int] = (640, 480), seconds_per_photo: float = 6.0,
                 fps: float = DEFAULT_FPS, photos: tuple[str, ...] = DEMO_PHOTOS) -> None:
        self.size = size
        self.native_fps = fps
        self.frames_per_photo = max(1, int(seconds_per_photo * fps))
        self.photos = photos
        self._images: list[np.ndarray] = []
        self._t = 0

    def open(self) -> None:
        from .resources import demo_photo

        self._images = [demo_photo(name) for name in self.photos]

    @property
    def loaded(self) -> int:
        """How many demo photos were decoded by `open` (they ship in the package: works without scikit-image)."""
        return len(self._images)

    def read(self) -> np.ndarray | None:
        t = self._t
        self._t += 1
        img = self._images[(t // self.frames_per_photo) % len(self._images)]
        phase = (t % self.frames_per_photo) / self.frames_per_photo
        w, h = self.size
        ih, iw = img.shape[:2]
        # Cover the output, then zoom 1.0 -> 1.25 while drifting in a small circle.
        base = max(w / iw, h / ih)
        zoom = base * (1.0 + 0.25 * phase)
        slack_x, slack_y = iw * zoom - w, ih * zoom - h
        cx = 0.5 + 0.35 * math.cos(2 * math.pi * phase) * (slack_x > 0)
        cy = 0.5 + 0.35 * math.sin(2 * math.pi * phase) * (slack_y > 0)
        tx, ty = -slack_x * cx, -slack_y * cy
        m = np.array([[zoom, 0, tx], [0, zoom, ty]], dtype=np.float32)
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclass(frozen=True)
class SourceSpec:
    """What `--source` asked for, before opening (so the GUI can describe and re-open it)."""

    kind: str  # camera | video | folder | image | demo
    target: str


def parse_source(text: str | None) -> SourceSpec:
    """`0` / `camera:1` -> camera; `demo`; an existing folder; a video or image path by extension."""
    if text is None or text == "":
        return SourceSpec("camera", "0")
    t = text.strip()
    if t.isdigit():
        return SourceSpec("camera", t)
    if t.lower().startswith(("camera:", "cam:")):
        index = t.split(":", 1)[1]
        if not index.isdigit():
            raise SourceError(f"bad camera index in source {text!r} (use e.g. camera:0)")
        return SourceSpec("camera", index)
    if t.lower() == "demo":
        return SourceSpec("demo", "")
    p = Path(t).expanduser()
    if p.is_dir():
        return SourceSpec("folder", str(p))
    ext = p.suffix.lower()
    if ext in VIDEO_EXTS:
        return SourceSpec("video", str(p))
    if ext in IMAGE_EXTS:
        return SourceSpec("image", str(p))
    if not p.exists():
        raise SourceError(f"source not found: {t} (give a camera index, 'demo', a folder, a video or an image)")
    raise SourceError(f"unknown source type for {t}: use an image ({', '.join(sorted(IMAGE_EXTS))}) "
                      f"or video ({', '.join(sorted(VIDEO_EXTS))}) file")


_MAKERS: dict[str, Callable[[str], FrameSource]] = {
    "camera": lambda target: CameraSource(int(target)),
    "video": VideoSource,
    "folder": FolderSource,
    "image": ImageSource,
    "demo": lambda _target: DemoSource(),
}


def make_source(spec: SourceSpec) -> FrameSource:
    return _MAKERS[spec.kind](spec.target)


def open_source(text: str | None, *, fallback_to_demo: bool = False,
                notice: Callable[[str], None] | None = None) -> FrameSource:
    """Parse and open a source. With `fallback_to_demo` (the default camera when none was named), a camera
    that does not open becomes the demo source and `notice` is told why."""
    spec = parse_source(text)
    source = make_source(spec)
    try:
        source.open()
    except SourceError as err:
        if not (fallback_to_demo and spec.kind == "camera"):
            raise
        if notice is not None:
            notice(f"{err}; showing the demo source instead")
        source = DemoSource()
        source.open()
    return source
