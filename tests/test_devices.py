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
