"""`torchrun --nproc_per_node=2 -m deepvis_app scan --device cuda` on one GPU: both ranks share it (gloo for the
object collectives; NCCL would refuse two ranks on one GPU) and the store equals a single CUDA process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from gpu_common import needs_cuda

pytestmark = needs_cuda

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_two_processes_on_one_gpu_equal_one(tmp_path, monkeypatch):
    from test_topk import LAYERS, write_photos, write_tinynet

    from deepvis_app.topk import TopKStore
    from deepvis_app.topk.scan import scan
    from deepvis_app.zoo import load_model

    write_photos(tmp_path / "data")
    spec = write_tinynet(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    vm = load_model(spec, weights="default", device="cuda")
    single = tmp_path / "single"
    scan(vm, tmp_path / "data", single, layers=LAYERS, top_k=3, batch_size=3, workers=0, progress=False,
         attribution=("deconv",))
    args = ["scan", str(tmp_path / "data"), "--out", str(tmp_path / "dist"), "--model", str(spec),
            "--device", "cuda", "--layers", LAYERS, "--top-k", "3", "--batch-size", "2", "--workers", "0",
            "--quiet", "--attribution", "deconv"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "deepvis_app", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = TopKStore.open(single), TopKStore.open(tmp_path / "dist")
    assert a.layers == b.layers
    for layer in a.layers:
        for unit in range(a.channels(layer)):
            ea, eb = a.entries(layer, unit), b.entries(layer, unit)
            assert [(e.image_id, e.y, e.x, e.box) for e in ea] == [(e.image_id, e.y, e.x, e.box) for e in eb]
            np.testing.assert_allclose([e.value for e in ea], [e.value for e in eb], rtol=1e-5, atol=1e-6)
            for e in ea:
                ca, cb = a.crop(layer, unit, e.rank, "deconv"), b.crop(layer, unit, e.rank, "deconv")
                assert ca.shape == cb.shape and np.abs(ca.astype(int) - cb.astype(int)).max() <= 1
