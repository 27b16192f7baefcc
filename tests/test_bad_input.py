"""Bad input, tried systematically over predict, layers, attribute, run --headless, optimize, optimize-layer and
model spec files: every case ends in one line `deepvis: error: ...` with exit 2 (or a correct result), never a
traceback, and writes nothing.

Cases run in-process through `deepvis_app.cli.main` (fast); the default model is loaded once and shared.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from deepvis_app import cli
from deepvis_app.commands import common

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _shared_model(lite0, monkeypatch, tmp_path):
    """The default model loads once per session; everything else goes through the real loader."""
    real = common.load_model

    def load(name, *, weights="default", device="auto", **kw):
        if name == "efficientnet_lite0" and weights == "default" and device in ("auto", "cpu"):
            return lite0
        return real(name, weights=weights, device=device, **kw)

    monkeypatch.setattr(common, "load_model", load)
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def one_line_error(argv: list[str], capsys, root: Path, *, contains: str | None = None) -> str:
    """Run the CLI; assert exit 2, one `deepvis: error:` line on stderr, nothing on stdout, nothing written."""
    before = _files(root)
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}: {err}"
    assert len(lines) == 1 and lines[0].startswith("deepvis: error: "), f"{argv}: {err!r}"
    assert "Traceback" not in err and out == ""
    assert _files(root) == before, f"{argv} wrote {_files(root) - before}"
    if contains is not None:
        assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


def ok(argv: list[str], capsys) -> str:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"exit {code} for {argv}: {err}"
    assert "Traceback" not in err
    return out


# ---------------------------------------------------------------- image files, good and bad

def _png(rgb: np.ndarray) -> bytes:
    ok_, buf = cv2.imencode(".png", rgb)
    assert ok_
    return buf.tobytes()


def _pil(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chelsea_bgr(photos) -> np.ndarray:
    return cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR)


def _good_images(bgr: np.ndarray) -> dict[str, bytes]:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    frames = [rgb.rotate(a) for a in (0, 10, 20)]
    return {
        "one_pixel.png": _png(bgr[100:101, 200:201]),
        "gray.png": _png(gray),
        "rgba.png": _png(rgba),
        "sixteen_bit.png": _png(bgr.astype(np.uint16) * 257),
        "cmyk.jpg": _pil(rgb.convert("CMYK"), "JPEG", quality=90),
        "animated.gif": _pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "chat été/ph oto.png": _png(bgr),
    }


def test_predict_reads_every_kind_of_image(tmp_path, capsys, chelsea_bgr):
    """1x1, gray, RGBA, 16-bit, CMYK, animated GIF and a unicode path with spaces: all classified (one run)."""
    paths = []
    for name, data in _good_images(chelsea_bgr).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    rows = json.loads(ok(["predict", *paths, "--json", "--device", "cpu"], capsys))
    assert [Path(r["image"]) for r in rows] == paths
    for path, row in zip(paths, rows, strict=True):
        preds = row["predictions"]
        assert len(preds) == 5 and sum(p["prob"] for p in preds) <= 1.0 + 1e-6
        if path.stem not in ("one_pixel", "animated"):  # the others are the cat photo in another layout
            assert preds[0]["index"] in range(281, 286), (path.name, preds[0])


def test_huge_image_is_decoded_reduced(tmp_path, capsys):
    """12000 x 12000: decoded at 1/4 (3000 x 3000) while reading, so no 430 MB frame; the prediction works."""
    from deepvis_app.sources import read_image

    big = np.zeros((12000, 12000), np.uint8)
    big[3000:9000, 3000:9000] = 200
    ok_, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 50])
    del big
    path = tmp_path / "huge.jpg"
    path.write_bytes(buf.tobytes())
    img = read_image(path)
    assert img.shape == (3000, 3000, 3) and img[1500, 1500, 0] > 150 and img[10, 10, 0] < 30
    assert len(json.loads(ok(["predict", path, "--json", "--device", "cpu"], capsys))[0]["predictions"]) == 5


def _bad_image(kind: str, tmp_path: Path, bgr: np.ndarray) -> Path:
    path = tmp_path / f"bad_{kind}.png"
    if kind == "missing":
        return tmp_path / "nope.png"
    if kind == "directory":
        path = tmp_path / "a_dir.png"
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    elif kind == "truncated":
        path.write_bytes(_png(bgr)[:200])
    elif kind == "text":
        path.write_text("hello")
    return path


BAD_IMAGES = ["missing", "directory", "empty", "corrupt", "truncated", "text"]


@pytest.mark.parametrize("kind", BAD_IMAGES)
@pytest.mark.parametrize("command", ["predict", "attribute", "run"])
def test_bad_image_inputs(kind, command, tmp_path, capsys, chelsea_bgr):
    path = _bad_image(kind, tmp_path, chelsea_bgr)
    out = tmp_path / "out.png"
    argv = {
        "predict": ["predict", path],
        "attribute": ["attribute", path, "--layer", "_blocks.3", "--unit", "0", "--out", out],
        "run": ["run", "--headless", "--source", path, "--frames", "2"],
    }[command]
    one_line_error(argv + ["--device", "cpu"], capsys, tmp_path)


def test_truncated_jpeg_gives_a_line_or_a_result(tmp_path, capsys, chelsea_bgr):
    """libjpeg fills a cut-off JPEG with grey: a prediction is a fine answer, a traceback is not."""
    ok_, buf = cv2.imencode(".jpg", chelsea_bgr)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    code = cli.main(["predict", str(path), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err


def test_folder_where_nothing_decodes_fails_at_start(tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"x{i}.jpg").write_bytes(b"not a jpeg")
    line = one_line_error(["run", "--headless", "--source", folder, "--frames", "2", "--device", "cpu"], capsys,
                          tmp_path)
    assert "none of the 3 images" in line


# ---------------------------------------------------------------- numbers out of range

NUMBERS = [
    (["predict", "{img}", "--top", "0"], "--top"),
    (["predict", "{img}", "--top", "-3"], "--top"),
    (["predict", "{img}", "--top", "1000000000"], "--top"),
    (["predict", "{img}", "--top", "nan"], "--top"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--out", "{out}", "--percentile", "-5"],
     "--percentile"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--out", "{out}", "--percentile", "nan"],
     "--percentile"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--out", "{out}", "--percentile", "0"],
     "--percentile"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "-1", "--out", "{out}"], "--unit"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--y", "-1", "--out", "{out}"], "--y"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "99999", "--out", "{out}"], "99999"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--y", "500", "--x", "0", "--out", "{out}"],
     None),
    (["run", "--headless", "--source", "{img}", "--fps", "1e-12"], "--fps"),
    (["run", "--headless", "--source", "{img}", "--fps", "-1"], "--fps"),
    (["run", "--headless", "--source", "{img}", "--fps", "nan"], "--fps"),
    (["run", "--headless", "--source", "{img}", "--fps", "inf"], "--fps"),
    (["run", "--headless", "--source", "{img}", "--frames", "0"], "--frames"),
    (["run", "--headless", "--source", "{img}", "--frames", "-5"], "--frames"),
    (["run", "--headless", "--source", "{img}", "--frames", "1e20"], "--frames"),
    (["run", "--headless", "--source", "{img}", "--gamma", "0"], "--gamma"),
    (["run", "--headless", "--source", "{img}", "--gamma", "nan"], "--gamma"),
    (["run", "--headless", "--source", "{img}", "--timeout", "0"], "--timeout"),
    (["run", "--headless", "--source", "{img}", "--timeout", "1e12"], "--timeout"),
    (["run", "--headless", "--source", "{img}", "--select", "_blocks.3:9999"], "9999"),
    (["optimize", "--class", "goose", "--out", "{out}", "--seed", "1e20"], "--seed"),
    (["optimize", "--class", "goose", "--out", "{out}", "--seed", "-1"], "--seed"),
    (["optimize", "--class", "goose", "--out", "{out}", "--steps", "-1"], "--steps"),
    (["optimize", "--class", "goose", "--out", "{out}", "--steps", "1000000000"], "--steps"),
    (["optimize", "--class", "goose", "--out", "{out}", "--size", "0"], "--size"),
    (["optimize", "--class", "goose", "--out", "{out}", "--size", "100000"], "--size"),
    (["optimize", "--class", "goose", "--out", "{out}", "--batch", "0"], "--batch"),
    (["optimize", "--class", "goose", "--out", "{out}", "--batch", "100000"], "--batch"),
    (["optimize", "--class", "1000", "--out", "{out}"], "out of range"),
    (["optimize", "--class", "-1", "--out", "{out}"], "out of range"),
    (["optimize", "--layer", "_blocks.3", "--unit", "-1", "--out", "{out}"], "--unit"),
    (["optimize-layer", "--layer", "_blocks.3", "--units", "99999", "--out", "{dir}"], "99999"),
    (["optimize-layer", "--layer", "_blocks.3", "--units", "a-b", "--out", "{dir}"], "--units"),
    (["optimize-layer", "--layer", "_blocks.3", "--size", "100000", "--out", "{dir}"], "--size"),
]


def _fill(argv: list[str], tmp_path: Path, img: str) -> list[str]:
    return [a.format(img=img, out=tmp_path / "o.png", dir=tmp_path / "layer_out") for a in argv]


@pytest.mark.parametrize("argv, contains", NUMBERS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NUMBERS])
def test_numbers_out_of_range(argv, contains, tmp_path, capsys, chelsea_png):
    root = tmp_path / "w"
    root.mkdir()
    one_line_error(_fill(argv, root, chelsea_png) + ["--device", "cpu"], capsys, root, contains=contains)


# ---------------------------------------------------------------- unknown names, usage mistakes

UNKNOWN = [
    (["layers", "--model", "no_such_model"], "unknown model"),
    (["predict", "{img}", "--model", "no_such_model"], "unknown model"),
    (["predict", "{img}", "--model", "{tmp}/missing.toml"], "not found"),
    (["predict", "{img}", "--model", ""], "empty"),
    (["attribute", "{img}", "--layer", "no_layer", "--unit", "0", "--out", "{out}"], "no_layer"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--out", "{tmp}/x.jpg"], ".png or .npy"),
    (["attribute", "{img}", "--layer", "_blocks.3", "--unit", "0", "--method", "magic", "--out", "{out}"],
     "--method"),
    (["run", "--headless", "--source", "{img}", "--layer", "no_layer"], "no_layer"),
    (["run", "--headless", "--source", "{img}", "--select", "no_layer:0"], "no_layer"),
    (["run", "--headless", "--source", "{img}", "--select", "_blocks.3:0", "--attribution", "magic"], "magic"),
    (["run", "--headless", "--source", "{tmp}/nothing_here"], "not found"),
    (["run", "--headless", "--source", "camera:x"], "camera"),
    (["optimize", "--class", "gose", "--out", "{out}"], "goose"),
    (["optimize", "--layer", "no_layer", "--unit", "0", "--out", "{out}"], "no_layer"),
    (["optimize", "--unit", "20", "--out", "{out}"], "--class"),  # argparse's own error, one line
    (["optimize", "--class", "goose"], "--out"),
    (["optimize-layer", "--layer", "no_layer", "--out", "{dir}"], "no_layer"),
    (["predict"], "IMAGE"),
    (["predict", "{img}", "--no-such-flag"], "--no-such-flag"),
    (["no-such-command"], "invalid choice"),
    (["predict", "{img}", "--weights", "{tmp}/missing.pt"], "not found"),
    (["predict", "{img}", "--device", "tpu"], None),
]


@pytest.mark.parametrize("argv, contains", UNKNOWN, ids=[" ".join(a[:3]) for a, _ in UNKNOWN])
def test_unknown_names_and_usage(argv, contains, tmp_path, capsys, chelsea_png):
    root = tmp_path / "w"
    root.mkdir()
    argv = [a.format(img=chelsea_png, out=root / "o.png", dir=root / "layer_out", tmp=root) for a in argv]
    one_line_error(argv, capsys, root, contains=contains)


# ---------------------------------------------------------------- outputs that cannot be written

def test_unwritable_outputs(tmp_path, capsys, chelsea_png):
    root = tmp_path / "w"
    (root / "existing_dir.png").mkdir(parents=True)
    (root / "a_file").write_text("x")
    unit = ["--layer", "_blocks.3", "--unit", "0"]
    cases = [
        ["attribute", chelsea_png, *unit, "--out", root / "existing_dir.png"],
        ["attribute", chelsea_png, *unit, "--out", root / "no" / "such" / "dir" / "x.png"],
        ["attribute", chelsea_png, *unit, "--out", "/proc/deepvis_test.png"],
        ["optimize", "--class", "goose", "--out", root / "existing_dir.png"],
        ["optimize", "--class", "goose", "--out", "/proc/deepvis_test.png"],
        ["optimize", "--class", "goose", "--out", root / "small.png", "--steps", "1", "--size", "16"],
        ["optimize", "--class", "goose", "--out", root / "missing_dir" / "g.png"],
        ["optimize-layer", "--layer", "_conv_stem", "--out", root / "a_file"],
        ["optimize-layer", "--layer", "_conv_stem", "--units", "0", "--out", "/proc/deepvis_test_dir"],
        ["optimize-layer", "--layer", "_conv_stem", "--units", "0", "--out", root / "a_file" / "sub"],
    ]
    for argv in cases:
        one_line_error([*argv, "--device", "cpu"], capsys, root)
    # the image commands share `check_output_file`: suffix, directory, missing folder, unwritable place
    shared = [
        (["occlude", chelsea_png, "--class", "0", "--out", root / "m.jpg"], "--out must end in .png"),
        (["occlude", chelsea_png, "--class", "0", "--out", root / "m.png", "--npy", root / "missing_dir" / "m.npy"],
         "--npy: folder does not exist"),
        (["occlude", chelsea_png, "--class", "0", "--out", "/proc/deepvis_test.png"], "cannot write"),
        (["fool", chelsea_png, "--target", "9", "--out", root / "existing_dir.png"], "is a directory"),
        (["fool", chelsea_png, "--target", "9", "--out", root / "x.png", "--diff", root / "d.bmp"],
         "--diff must end in .png"),
        (["style", chelsea_png, chelsea_png, "--out", "/proc/deepvis_test.png"], "cannot write"),
    ]
    for argv, contains in shared:
        one_line_error([*argv, "--device", "cpu"], capsys, root, contains=contains)
    assert not Path("/proc/deepvis_test.png").exists()


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_image_and_spec(tmp_path, capsys, chelsea_png):
    img = tmp_path / "locked.png"
    img.write_bytes(Path(chelsea_png).read_bytes())
    img.chmod(0)
    spec = tmp_path / "locked.toml"
    spec.write_text('builder = "torchvision:resnet18"\ninput_size = 64\n')
    spec.chmod(0)
    one_line_error(["predict", img], capsys, tmp_path, contains="permission")
    one_line_error(["layers", "--model", spec], capsys, tmp_path)


# ---------------------------------------------------------------- model spec files

GOOD_SPEC = 'name = "s"\nbuilder = "torchvision:resnet18"\ninput_size = 64\nlabels = "none"\n'

SPECS = {
    "syntax_error": ('builder = "torchvision:resnet18\ninput_size = 64\n', "not valid TOML"),
    "empty": ("", "empty model spec"),
    "comments_only": ("# nothing\n", "empty model spec"),
    "binary": (b"\xff\xfe\x00garbage\x00", "not a text file"),
    "missing_builder": ("input_size = 64\n", "missing field 'builder'"),
    "missing_input_size": ('builder = "torchvision:resnet18"\n', "missing field 'input_size'"),
    "input_size_string": ('builder = "torchvision:resnet18"\ninput_size = "big"\n', "input_size"),
    "input_size_bool": ('builder = "torchvision:resnet18"\ninput_size = true\n', "input_size"),
    "input_size_huge": ('builder = "torchvision:resnet18"\ninput_size = 100000\n', "between 8 and"),
    "input_size_zero": ('builder = "torchvision:resnet18"\ninput_size = 0\n', "between 8 and"),
    "mean_wrong": ('builder = "torchvision:resnet18"\ninput_size = 64\nmean = [1, 2]\n', "mean"),
    "std_zero": ('builder = "torchvision:resnet18"\ninput_size = 64\nstd = [0, 1, 1]\n', "std"),
    "crop_unknown": ('builder = "torchvision:resnet18"\ninput_size = 64\ncrop = "zoom"\n', "crop"),
    "layers_wrong": ('builder = "torchvision:resnet18"\ninput_size = 64\nlayers = [1, 2]\n', "layers[0]"),
    "builder_int": ("builder = 3\ninput_size = 64\n", "builder"),
    "builder_no_colon": ('builder = "resnet18"\ninput_size = 64\n', "builder"),
    "builder_empty": ('builder = ":"\ninput_size = 64\n', "builder"),
    "builder_relative": ('builder = "..x:y"\ninput_size = 64\n', "builder"),
    "builder_spaces": ('builder = "a b:c"\ninput_size = 64\n', "builder"),
    "builder_no_package": ('builder = "no_such_pkg_xyz:build"\ninput_size = 64\n', "no installed module"),
    "builder_no_attr": ('builder = "deepvis_app.builders:nothing"\ninput_size = 64\n', "has no 'nothing'"),
    "builder_not_callable": ('builder = "math:pi"\ninput_size = 64\n', "not callable"),
    "builder_no_pretrained": ('builder = "os:system"\ninput_size = 64\n', "pretrained"),
    "builder_returns_dict": ('builder = "builtins:dict"\ninput_size = 64\n', "not a torch.nn.Module"),
    "builder_raises": ('builder = "json:loads"\ninput_size = 64\n', None),
    "torchvision_unknown": ('builder = "torchvision:resnet9000"\ninput_size = 64\n', "resnet9000"),
    "weights_unknown": ('builder = "torchvision:resnet18"\ninput_size = 64\nweights = "NOPE"\n', "weights"),
    "labels_missing": ('builder = "torchvision:resnet18"\ninput_size = 64\nlabels = "nofile.txt"\n', "labels"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_bad_spec_files(case, tmp_path, capsys):
    text, contains = SPECS[case]
    spec = tmp_path / f"{case}.toml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    weights = "default" if case == "weights_unknown" else "random"  # random weights never look at the enum
    one_line_error(["layers", "--model", spec, "--weights", weights, "--device", "cpu"], capsys, tmp_path,
                   contains=contains)


def test_spec_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "dir.toml").mkdir()
    one_line_error(["layers", "--model", tmp_path / "dir.toml"], capsys, tmp_path, contains="directory")


def test_spec_with_unicode_path_and_spaces_works(tmp_path, capsys):
    folder = tmp_path / "mes modèles"
    folder.mkdir()
    spec = folder / "petit réseau.toml"
    spec.write_text(GOOD_SPEC)
    rows = json.loads(ok(["layers", "--model", spec, "--weights", "random", "--device", "cpu", "--json"], capsys))
    assert rows[0]["name"] == "conv1" and rows[0]["shape"] == [64, 32, 32]


# ---------------------------------------------------------------- weights files

def test_bad_weights_files(tmp_path, capsys, chelsea_png):
    spec = tmp_path / "s.toml"
    spec.write_text(GOOD_SPEC)
    net = torch.nn.Module()
    from torchvision.models import resnet18

    state = resnet18().state_dict()
    # a body tensor of another shape: not this architecture (a head of another size is rebuilt instead: #25)
    wrong = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(wrong, tmp_path / "wrong_shape.pt")
    torch.save({"a.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "dir.pt").mkdir()
    torch.save([1, 2, 3], tmp_path / "list.pt")
    del net
    expect = {"wrong_shape.pt": "another shape", "foreign.pt": "no parameter name", "corrupt.pt": "not a PyTorch",
              "empty.pt": "not a PyTorch", "dir.pt": "is a folder, not a file", "list.pt": "not a state dict"}
    for name, contains in expect.items():
        one_line_error(["predict", chelsea_png, "--model", spec, "--weights", tmp_path / name, "--device", "cpu"],
                       capsys, tmp_path, contains=contains)


# ---------------------------------------------------------------- headless run: partial report on timeout

def test_headless_timeout_prints_the_partial_report(tmp_path, capsys, chelsea_png):
    code = cli.main(["run", "--headless", "--source", chelsea_png, "--fps", "10", "--frames", "1000",
                     "--timeout", "6", "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 1 and report["timed_out"] is True and report["frames_wanted"] == 1000
    assert 1 <= report["frames_processed"] < 1000 and "timed out" in err and "Traceback" not in err
