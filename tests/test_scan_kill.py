"""Real SIGKILLs of `deepvis scan` in pass 1, in the crop pass and while publishing: the resumed (or rerun) scan
writes the same store as a clean run, and no reader ever sees a half store or a half file.

The scan pauses at a named point when DEEPVIS_KILL_AT is set (store.kill_point touches DEEPVIS_KILL_MARKER and
sleeps); the test waits for the marker and sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_topk import write_photos, write_tinynet

from deepvis_app.topk import TopKStore

ROOT = Path(__file__).resolve().parent.parent
LAYERS = "conv1,relu2,fc"


def _cmd(tmp: Path, spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepvis_app", "scan", str(tmp / "data"), "--out", str(out), "--model", str(spec),
            "--device", "cpu", "--layers", LAYERS, "--top-k", "3", "--batch-size", "2", "--workers", "0",
            "--checkpoint-every", "1", "--quiet", "--attribution", "deconv,guided", *extra]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPVIS_KILL")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)]), "OMP_NUM_THREADS": "1", **extra}


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=env["PYTHONPATH"].split(
        os.pathsep)[0])
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_at(point: str, cmd: list[str], tmp: Path) -> None:
    marker = tmp / f"marker-{point}"
    marker.unlink(missing_ok=True)
    env = _env(tmp, DEEPVIS_KILL_AT=point, DEEPVIS_KILL_MARKER=str(marker))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"scan ended before {point}: {proc.stderr.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _snapshot(store: Path) -> dict[str, object]:
    """Everything a reader sees: index (minus timestamps), arrays, images.json, every PNG's pixels."""
    s = TopKStore.open(store)
    index = {k: v for k, v in s.index.items() if k != "created"}
    out: dict[str, object] = {"index": index, "images.json": json.loads((store / "images.json").read_text())}
    for f in sorted((store / "layers").glob("*.npz")):
        with np.load(f, allow_pickle=False) as d:
            out[f.name] = {k: d[k].tolist() for k in d.files}
    for layer in s.layers:
        for unit in range(s.channels(layer)):
            for e in s.entries(layer, unit):
                for kind in s.kinds:
                    crop = s.crop(layer, unit, e.rank, kind)
                    assert crop is not None, (layer, unit, e.rank, kind)
                    out[f"{layer}/{unit}/{e.rank}/{kind}"] = crop
    out["files"] = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            # deconv/guided crops of a resumed run may be batched differently: float noise of one grey level
            assert a[key].shape == b[key].shape and np.abs(a[key].astype(int) - b[key].astype(int)).max() <= 1, key
        else:
            assert a[key] == b[key], key


def _scan_here(tmp: Path, spec: Path, out: Path, top_k: int = 3) -> None:
    """The same scan as `_cmd`, in this process (cheaper than a subprocess for the reference runs)."""
    from deepvis_app.topk.scan import scan
    from deepvis_app.zoo import load_model

    sys.path.insert(0, str(tmp))
    sys.modules.pop("tinynet_topk", None)
    try:
        vm = load_model(spec, weights="default", device="cpu")
        scan(vm, tmp / "data", out, layers=LAYERS, top_k=top_k, batch_size=2, workers=0, checkpoint_every=1,
             progress=False, attribution=("deconv", "guided"))
    finally:
        sys.path.remove(str(tmp))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    write_photos(tmp / "data")
    spec = write_tinynet(tmp)
    clean = tmp / "clean"
    _scan_here(tmp, spec, clean)
    return tmp, spec, _snapshot(clean)


def _clean_siblings(out: Path) -> None:
    assert not list(out.parent.glob(out.name + ".old-*")), "a stranded old store"
    assert not out.with_name(out.name + ".partial").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("checkpoint")]


def test_kill_in_pass1_then_resume(setup):
    tmp, spec, clean = setup
    out = tmp / "k1"
    _kill_at("pass1", _cmd(tmp, spec, out), tmp)
    assert not out.exists()  # nothing where the store goes
    assert list(out.with_name("k1.partial").glob("checkpoint-*.pt"))
    _run(_cmd(tmp, spec, out, "--resume"), _env(tmp))
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] is True and report["bad_count"] == 1
    _assert_same(_snapshot(out), clean)
    _clean_siblings(out)


def test_kill_in_crop_pass_then_resume(setup):
    tmp, spec, clean = setup
    out = tmp / "k2"
    _kill_at("crops", _cmd(tmp, spec, out), tmp)
    assert not out.exists()
    staging = out.with_name("k2.partial")
    written = list(staging.glob("crops/*/*.png"))
    assert written  # the kill came after some crops were on disk
    # what a kill in the middle of a write leaves: a temp file next to the crops
    (staging / "crops" / "L000" / ".u00000_r000_guided.png.x1y2.tmp").write_bytes(b"\x89PNG half")
    _run(_cmd(tmp, spec, out, "--resume"), _env(tmp))
    _assert_same(_snapshot(out), clean)
    _clean_siblings(out)


def test_kill_while_publishing_over_a_store(setup):
    tmp, spec, clean = setup
    out = tmp / "k3"
    _scan_here(tmp, spec, out, top_k=2)  # an older store at the path
    assert TopKStore.open(out).top_k == 2
    _kill_at("publish", _cmd(tmp, spec, out), tmp)
    # a store is always at the path: the old one (two-rename fallback, recovered) or the new one (exchange)
    siblings = list(tmp.glob("k3.old-*"))
    if not out.exists():
        assert siblings and (siblings[0] / "index.json").is_file()
    else:
        assert TopKStore.open(out).top_k in (2, 3)
    _run(_cmd(tmp, spec, out, "--resume"), _env(tmp))
    _assert_same(_snapshot(out), clean)
    _clean_siblings(out)
