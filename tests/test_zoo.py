"""Model registry: specs, weights, preprocessing, labels; and every bad input gives one clear line."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from deepvis_app import DeepVisError, available_models, load_model
from deepvis_app.zoo import read_spec

CURATED = {"efficientnet_lite0", "alexnet", "vgg16", "resnet18", "googlenet", "squeezenet1_1", "mobilenet_v3_large"}


def test_curated_specs_parse_and_build_with_random_weights():
    assert CURATED <= set(available_models())
    for name in sorted(CURATED):
        vm = load_model(name, weights="random", device="cpu")
        known = set(vm.layers) | {n.partition("@")[0] for n in vm.layers}
        # every curated layer and the default layer exist in the built network
        for ls in vm.spec.layers:
            assert ls.name in known, (name, ls.name)
        assert vm.default_layer in known
        assert len(vm.categories) == 1000


def test_default_model_classifies_real_photos(lite0, photos):
    assert not lite0.net.training
    assert all(not p.requires_grad for p in lite0.net.parameters())
    results = {}
    for name in ("chelsea", "coffee"):
        with torch.inference_mode():
            probs = lite0.net(lite0.preprocess(photos[name])).softmax(-1)[0]
        results[name] = lite0.categories[int(probs.argmax())]
    assert results["chelsea"] in {"Egyptian cat", "tabby", "tiger cat"}
    assert results["coffee"] == "espresso"


def test_preprocess_center_crop_and_normalization(lite0):
    # a 100x300 image whose middle third is white: the centre crop keeps only white
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255
    fitted = lite0.preprocess.fit(img)
    assert fitted.shape == (224, 224, 3) and fitted.min() == 255
    x = lite0.preprocess(img)
    assert x.shape == (1, 3, 224, 224)
    expected = (255 - 0.498 * 255) / (0.502 * 255)
    assert torch.allclose(x, torch.full_like(x, expected), atol=1e-4)
    stretched = lite0.preprocess.fit(img, crop="stretch")
    assert stretched[:, :40].max() == 0 and stretched[:, 112].min() == 255
    assert np.array_equal(lite0.preprocess.deprocess(x), fitted)


def test_random_weights_are_seeded_and_differ_from_pretrained():
    a = load_model(weights="random", device="cpu", seed=3)
    b = load_model(weights="random", device="cpu", seed=3)
    c = load_model(device="cpu")
    wa, wb, wc = (m.net._conv_stem.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_state_dict_file_round_trip(tmp_path, lite0):
    path = tmp_path / "w.pth"
    torch.save(lite0.net.state_dict(), path)
    vm = load_model(weights=str(path), device="cpu")
    assert torch.equal(vm.net._fc.weight, lite0.net._fc.weight)


@pytest.mark.parametrize("content, message", [
    (b"this is not a model", "not a PyTorch state dict"),
    (None, "weights file not found"),
])
def test_bad_weights_files(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DeepVisError, match=message):
        load_model(weights=str(path), device="cpu")


def test_weights_of_another_model_are_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(DeepVisError, match="no parameter name matches"):
        load_model(weights=str(path), device="cpu")


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('pwned')",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(DeepVisError):
        load_model(weights=str(path), device="cpu")
    assert not (tmp_path / "pwned").exists()


def test_unknown_model_lists_curated():
    with pytest.raises(DeepVisError, match="unknown model 'nope'.*efficientnet_lite0"):
        load_model("nope")


def test_missing_torchvision_weights_name_file_and_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DeepVisError) as err:
        load_model("alexnet", device="cpu")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "checkpoints") in msg and "\n" not in msg


SPEC = """
name = "mine"
builder = "deepvis_app.builders:efficientnet_lite0"
input_size = 96
mean = [0.498, 0.498, 0.498]
std = [0.502, 0.502, 0.502]
[[layers]]
name = "_blocks.3"
title = "my block"
"""


def test_user_spec_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(SPEC)
    vm = load_model(str(path), device="cpu")
    assert vm.name == "mine" and vm.input_size == 96
    assert vm.preprocess(np.zeros((50, 70, 3), np.uint8)).shape == (1, 3, 96, 96)
    assert [ls.title for ls in vm.shown_layers] == ["my block"]


@pytest.mark.parametrize("edit, field", [
    (lambda s: s.replace('builder = "deepvis_app.builders:efficientnet_lite0"\n', ""), "builder"),
    (lambda s: s.replace("input_size = 96", 'input_size = "big"'), "input_size"),
    (lambda s: s.replace("std = [0.502, 0.502, 0.502]", "std = [1, 2]"), "std"),
    (lambda s: 'crop = "diagonal"\n' + s, "crop"),
    (lambda s: s.replace("deepvis_app.builders:efficientnet_lite0", "no_such_pkg:thing"), "builder"),
    (lambda s: s.replace("[[layers]]", "[[layers]\n"), "TOML"),
    # issue 31: not-a-number normalization, and layers the network does not have, were accepted
    (lambda s: s.replace("mean = [0.498, 0.498, 0.498]", "mean = [nan, 0.498, 0.498]"), "'mean'"),
    (lambda s: s.replace("std = [0.502, 0.502, 0.502]", "std = [0.5, inf, 0.5]"), "'std'"),
    (lambda s: 'default_layer = "_blocks.99"\n' + s, "'default_layer': unknown layer '_blocks.99'"),
    (lambda s: s.replace('name = "_blocks.3"', 'name = "_blokcs.3"'), "'layers[0]': unknown layer '_blokcs.3'"),
    (lambda s: 'crop_pct = 1.5\n' + s, "'crop_pct'"),
    (lambda s: 'interpolation = "lanczos"\n' + s, "'interpolation'"),
])
def test_bad_specs_name_file_and_field(tmp_path, edit, field):
    path = tmp_path / "bad.toml"
    path.write_text(edit(SPEC))
    with pytest.raises(DeepVisError) as err:
        load_model(str(path), device="cpu")
    assert str(path) in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_spec_reader_defaults(tmp_path):
    path = tmp_path / "min.toml"
    path.write_text('builder = "torchvision:resnet18"\ninput_size = 64\n')
    spec = read_spec(path)
    assert spec.name == "min" and spec.crop == "center" and spec.labels == "imagenet" and spec.resize == 64


# ---- downloads touch no process-wide state; builders are checked; the trust model -----------------------


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_weight_download_uses_a_per_call_timeout_and_no_global_state(monkeypatch, tmp_path):
    import socket
    import sys
    import urllib.request

    from deepvis_app import zoo

    monkeypatch.delenv("DEEPVIS_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    seen = []
    stderr, default_timeout = sys.stderr, socket.getdefaulttimeout()

    def failing(url, timeout=None):
        seen.append((url, timeout, socket.getdefaulttimeout(), sys.stderr))
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", failing)
    with pytest.raises(zoo.WeightsMissingError, match="download failed"):
        zoo.ensure_cached("https://example.org/w/net-1234.pth", "net")
    assert seen == [("https://example.org/w/net-1234.pth", zoo.DOWNLOAD_TIMEOUT_S, default_timeout, stderr)]
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(b"weights!" * 1000))
    zoo.ensure_cached("https://example.org/w/net-1234.pth", "net")
    files = list((tmp_path / "checkpoints").iterdir())
    assert [f.name for f in files] == ["net-1234.pth"] and files[0].read_bytes() == b"weights!" * 1000


def _spec_with(tmp_path, builder: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(f'builder = "{builder}"\ninput_size = 32\nlabels = "none"\n')
    return str(path)


@pytest.mark.parametrize("builder, message", [
    ("os:system", "does not take a 'pretrained' argument"),     # never called
    ("math:pi", "not callable"),
    ("builtins:dict", "returned dict, not a torch.nn.Module"),
    ("deepvis_app.builders:missing", "has no 'missing'"),
    ("no_such_module_xyz:build", "no installed module 'no_such_module_xyz'"),
    ("torch.nn:Identity", "has no layers to look at: Identity has no submodules"),  # issue 31: was a traceback
])
def test_builder_must_exist_take_pretrained_and_return_a_module(tmp_path, builder, message):
    with pytest.raises(DeepVisError, match=message):
        load_model(_spec_with(tmp_path, builder), weights="random", device="cpu")


EVIL = """
import pathlib
pathlib.Path("IMPORTED").write_text("evilplug ran")
import torch
def build(*, pretrained=False):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))  # a bare module has no layers to look at
"""


def test_python_dash_m_never_imports_a_builder_from_the_current_directory(tmp_path):
    """`python -m deepvis_app` puts the cwd first on sys.path; a stray ./evilplug.py named by a spec must not run.
    Put on PYTHONPATH on purpose, the same module loads (a spec is code, trusted like code)."""
    import os
    import subprocess
    import sys

    (tmp_path / "evilplug.py").write_text(EVIL)
    spec = _spec_with(tmp_path, "evilplug:build")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", DEEPVIS_OFFLINE="1")
    cmd = [sys.executable, "-m", "deepvis_app", "layers", "--model", spec, "--weights", "random", "--json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "IMPORTED").exists()
    assert proc.stderr.strip().splitlines() == [
        f"deepvis: error: {spec}: field 'builder': no installed module 'evilplug' (builder 'evilplug:build')"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "IMPORTED").exists(), proc.stderr


def test_default_builder_prints_nothing_and_keeps_sys_stdout(monkeypatch):
    import sys

    from deepvis_app.builders import efficientnet_lite0

    real_load = torch.load
    during = []

    def load(*args, **kwargs):  # runs inside the builder: is sys.stdout still ours there?
        during.append(sys.stdout is watch and kwargs.get("weights_only") is True)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)

    stdout = sys.stdout
    seen = []

    class Watch:
        def write(self, text):
            seen.append(text)
            return len(text)

        def flush(self):
            pass

    sys.stdout = watch = Watch()
    try:
        net = efficientnet_lite0(pretrained=True)
        assert sys.stdout is watch  # never swapped (that would be process-wide, across GUI job threads)
    finally:
        sys.stdout = stdout
    assert seen == [] and during == [True] and net._fc.weight.shape == (1000, 1280)
