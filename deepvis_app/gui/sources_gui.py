"""Source wrapper used by the window: adds 'freeze the camera' without touching the core's Capture."""

from __future__ import annotations

import threading

import numpy as np

from ..sources import FrameSource

FROZEN_FPS = 15.0


class FreezableSource(FrameSource):
    """Delegates to `inner`; while `frozen`, `read()` repeats the last frame (paced) so the network keeps
    analysing the frozen scene -- browsing layers and units still updates everything."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.frozen = False
        self._last: np.ndarray | None = None
        self._sleep = threading.Event()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def native_fps(self) -> float | None:  # type: ignore[override]
        return self.inner.native_fps

    @property
    def reconnectable(self) -> bool:  # type: ignore[override]
        return self.inner.reconnectable

    def open(self) -> None:
        self._sleep.clear()
        self.inner.open()

    def read(self) -> np.ndarray | None:
        if self.frozen and self._last is not None:
            self._sleep.wait(1.0 / FROZEN_FPS)
            return self._last
        frame = self.inner.read()
        if frame is not None:
            self._last = frame
        return frame

    def close(self) -> None:
        self._sleep.set()
        self.inner.close()


def camera_indices(dev_dir: str = "/dev", sys_dir: str = "/sys/class/video4linux",
                   platform: str | None = None) -> list[int]:
    """Indices of the cameras the Source menu offers.

    Linux: the /dev/videoN nodes, without the metadata nodes a UVC camera adds next to its capture node
    (their sysfs `index` is not 0). Elsewhere there is no cheap check, so cameras 0-3 are offered (opening a
    missing one says so in the banner).
    """
    import glob
    import os
    import re
    import sys

    if not (platform or sys.platform).startswith("linux"):
        return [0, 1, 2, 3]
    found = []
    for path in glob.glob(os.path.join(dev_dir, "video*")):
        m = re.fullmatch(r"video(\d+)", os.path.basename(path))
        if not m:
            continue
        try:
            with open(os.path.join(sys_dir, os.path.basename(path), "index"), encoding="ascii") as f:
                if f.read().strip() not in ("", "0"):
                    continue
        except OSError:
            pass  # no sysfs entry: keep it
        found.append(int(m.group(1)))
    return sorted(found)
