"""Failing commands print exactly our one `deepvis: error:` line on stderr: no OpenCV/FFmpeg/torch noise.

Subprocesses, because FFmpeg writes to file descriptor 2 from C (capsys would not see it) and reads its log
level once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    full.update(OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch"), **env)
    proc = subprocess.run([sys.executable, "-m", "deepvis_app", *args], capture_output=True, text=True,
                          env=full, cwd=tmp_path, timeout=120)
    return proc


def _stderr(args: list[str], tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    proc = _run(args, tmp_path, **env)
    return proc.returncode, proc.stderr.splitlines()


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory) -> Path:
    """A real MP4 cut in half: FFmpeg says 'moov atom not found' on fd 2 when it is opened."""
    d = tmp_path_factory.mktemp("vid")
    full = d / "full.mp4"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(20):
        w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    w.release()
    data = full.read_bytes()
    assert len(data) > 1000
    cut = d / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_video_is_noisy_without_our_defaults(truncated_mp4: Path, tmp_path: Path) -> None:
    """The case is real, and the user can still ask for the libraries' logs: with both levels overridden FFmpeg's
    own complaint comes through (OpenCV's logger puts it on stdout), then our line on stderr."""
    proc = _run(["run", "--headless", "--source", str(truncated_mp4)], tmp_path,
                OPENCV_FFMPEG_LOGLEVEL="32", OPENCV_LOG_LEVEL="INFO")
    assert proc.returncode == 2
    assert "[OPENCV:FFMPEG:" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines()[-1].startswith("deepvis: error: not a readable video")


@pytest.mark.parametrize("case", ["corrupt_image", "truncated_png", "truncated_video", "camera",
                                  "offline_weights", "no_network_weights"])
def test_failing_command_prints_one_line(case: str, truncated_mp4: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"garbage, not a jpeg")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((32, 32, 3), np.uint8))
    png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])  # libpng: "PNG input buffer is incomplete" on fd 2
    env: dict[str, str] = {}
    args = {
        "corrupt_image": ["predict", "bad.jpg"],
        "truncated_png": ["predict", "half.png"],
        "truncated_video": ["run", "--headless", "--source", str(truncated_mp4)],
        "camera": ["run", "--headless", "--source", "7"],
        "offline_weights": ["predict", "--model", "resnet18", "ok.png"],
        "no_network_weights": ["predict", "--model", "resnet18", "ok.png"],
    }[case]
    if case == "offline_weights":
        env["DEEPVIS_OFFLINE"] = "1"
    if case == "no_network_weights":  # an unreachable proxy: the download fails at once, network or not
        env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    rc, err = _stderr(args, tmp_path, **env)
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("deepvis: error: "), err
