"""`torchrun --nproc_per_node=2 -m deepvis_app scan` (gloo, CPU) writes the same store as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_topk import LAYERS, ensure_rf_module, write_photos, write_tinynet

from deepvis_app.topk import TopKStore
from deepvis_app.topk.scan import scan
from deepvis_app.zoo import load_model

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"

# Used only while deepvis_app.receptive_field is not in the tree: installs the test stand-in, then the CLI.
ENTRY = """
import sys
sys.path.insert(0, {tests!r})
from test_topk import ensure_rf_module
ensure_rf_module()
from deepvis_app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_two_processes_equal_single(tmp_path, monkeypatch):
    ensure_rf_module()
    write_photos(tmp_path / "data")
    spec = write_tinynet(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    vm = load_model(spec, weights="default", device="cpu")
    single = tmp_path / "single"
    scan(vm, tmp_path / "data", single, layers=LAYERS, top_k=3, batch_size=3, workers=0, progress=False,
         attribution=("deconv", "guided"))

    args = ["scan", str(tmp_path / "data"), "--out", str(tmp_path / "dist"), "--model", str(spec),
            "--device", "cpu", "--layers", LAYERS, "--top-k", "3", "--batch-size", "2", "--workers", "0", "--quiet",
            "--attribution", "deconv,guided"]
    real_rf = (ROOT / "deepvis_app" / "receptive_field.py").is_file() or \
        (ROOT / "deepvis_app" / "receptive_field" / "__init__.py").is_file()
    if real_rf:
        target = ["-m", "deepvis_app"]
    else:
        entry = tmp_path / "entry.py"
        entry.write_text(ENTRY.format(tests=str(ROOT / "tests")))
        target = [str(entry)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", *target, *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = TopKStore.open(single), TopKStore.open(tmp_path / "dist")
    assert a.layers == b.layers
    for layer in a.layers:
        for unit in range(a.channels(layer)):
            ea, eb = a.entries(layer, unit), b.entries(layer, unit)
            assert [(e.image_id, e.path, e.y, e.x, e.box, e.padded) for e in ea] == \
                [(e.image_id, e.path, e.y, e.x, e.box, e.padded) for e in eb]
            np.testing.assert_allclose([e.value for e in ea], [e.value for e in eb], rtol=1e-5, atol=1e-6)
            for e in ea:
                np.testing.assert_array_equal(a.crop(layer, unit, e.rank), b.crop(layer, unit, e.rank))
                for kind in ("deconv", "guided"):  # batched differently per rank: float noise only
                    ca, cb = a.crop(layer, unit, e.rank, kind), b.crop(layer, unit, e.rank, kind)
                    assert ca.shape == cb.shape and np.abs(ca.astype(int) - cb.astype(int)).max() <= 1
    report = json.loads((tmp_path / "dist" / "report.json").read_text())
    assert report["world_size"] == 2 and report["bad_count"] == 1
