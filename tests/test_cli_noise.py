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


@pytest.mark.parametrize("case", ["corrupt_image", "truncated_png", "damaged_png", "truncated_video", "camera",
                                  "offline_weights", "no_network_weights"])
def test_failing_command_prints_one_line(case: str, truncated_mp4: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"garbage, not a jpeg")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((32, 32, 3), np.uint8))
    png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])  # libpng: "PNG input buffer is incomplete" on fd 2
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside IDAT: libpng: "bad adaptive filter value" (or similar) on fd 2
    (tmp_path / "flip.png").write_bytes(bytes(flipped))
    env: dict[str, str] = {}
    args = {
        "corrupt_image": ["predict", "bad.jpg"],
        "truncated_png": ["predict", "half.png"],
        "damaged_png": ["predict", "flip.png"],
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


def test_png_check_keeps_what_libpng_reads() -> None:
    """The pre-check refuses only what libpng refuses: a bad CRC in an ancillary chunk (tEXt) still decodes,
    identical to the clean file; a bad CRC in IDAT or a cut file does not."""
    from deepvis_app.sources import decode_image

    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    text = b"tEXt" + b"Comment\x00hello"
    chunk = (len(text) - 4).to_bytes(4, "big") + text + b"\x00\x00\x00\x00"  # wrong CRC on purpose
    with_text = png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR chunk
    for data in (png, with_text):
        out = decode_image(np.frombuffer(data, np.uint8))
        assert out is not None and np.array_equal(out, rgb)
    idat = png.index(b"IDAT")
    bad = bytearray(png)
    bad[idat + 6] ^= 0x01
    assert decode_image(np.frombuffer(bytes(bad), np.uint8)) is None
    assert decode_image(np.frombuffer(png[:-12], np.uint8)) is None  # no IEND
