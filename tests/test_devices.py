import pytest
import torch

from deepvis_app import DeepVisError
from deepvis_app.devices import resolve_device


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda:0")
    with pytest.raises(DeepVisError, match="only 2 CUDA"):
        resolve_device("cuda:2")


def test_cuda_without_gpu_and_nonsense(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeepVisError, match="CUDA is not available"):
        resolve_device("cuda")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(DeepVisError, match="bad --device"):
            resolve_device(bad)


# The thread policy (issue 17) must reach OpenMP before torch loads, so it is checked in fresh interpreters.
_PROBE = r"""
import importlib.abc, json, os, sys
seen = {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and "policy" not in seen:
            seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Spy())
import deepvis_app
import torch
print(json.dumps({"at_torch_import": seen.get("policy"), "env": os.environ.get("OMP_WAIT_POLICY"),
                  "threads": torch.get_num_threads()}))
"""


def _probe(**env: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "DEEPVIS_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wait_policy_opt_in_is_set_before_torch_loads():
    assert _probe()["at_torch_import"] is None  # the default: torch's own policy (fastest on a quiet machine)
    got = _probe(DEEPVIS_WAIT_POLICY="passive")
    assert got["at_torch_import"] == "PASSIVE"  # set by `import deepvis_app`, before torch's OpenMP reads it
    assert got["env"] == "PASSIVE"


def test_user_choices_win():
    assert _probe(OMP_WAIT_POLICY="ACTIVE", DEEPVIS_WAIT_POLICY="passive")["at_torch_import"] == "ACTIVE"
    assert _probe(OMP_NUM_THREADS="1")["threads"] == 1
