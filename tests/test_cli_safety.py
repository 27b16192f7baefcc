"""Nothing lost, one line for every mistake (issue 31): every command, tried as a careless or hostile user would.

One table: each case runs the CLI in-process and must exit 2 with exactly one `deepvis: error: ...` line on
stderr (no progress bar before it, no traceback), print nothing on stdout, and leave the folder exactly as it
was: no file changed, none appeared (the result cache lives inside it too), the user's photo byte-identical.
Most cases fail before the model loads; the few that need it load the default net with random weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from deepvis_app import cli
from deepvis_app.embed.codes import Codes, image_list
from deepvis_app.errors import DeepVisError, ParamError
from deepvis_app.outputs import same_file, write_files

MODEL = ["--weights", "random", "--device", "cpu"]


def _codes(n: int = 8, d: int = 4, seed: int = 0) -> Codes:
    rng = np.random.default_rng(seed)
    return Codes(paths=[f"/photos/{i}.png" for i in range(n)], codes=rng.normal(size=(n, d)).astype(np.float32),
                 pred=rng.integers(0, 3, n).astype(np.int64), prob=rng.uniform(0.2, 1, n).astype(np.float32),
                 thumbs=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), layer="fc:input",
                 categories=["cat", "dog", "cup"])


def _save_arrays(path: Path, **changes) -> None:
    arrays = _codes().arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


# A damaged or crafted codes.npz: each must be refused in one line before anything is written.
CODES = {
    "good": lambda p: _codes().save(p),
    "rows": lambda p: _save_arrays(p, codes=np.ones((9, 4), np.float32)),
    "thumbs": lambda p: _save_arrays(p, thumbs=np.zeros((8, 8, 9, 3), np.uint8)),
    "zeros": lambda p: _save_arrays(p, codes=np.zeros((8, 4), np.float32)),
    "truncated": lambda p: (_codes().save(p), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "empty": lambda p: p.write_bytes(b""),
    "complex": lambda p: _save_arrays(p, codes=np.ones((8, 4), np.complex64)),
    "class": lambda p: _save_arrays(p, pred=np.full(8, 5, np.int64)),
    "negclass": lambda p: _save_arrays(p, pred=np.full(8, -1, np.int64)),
    "nan": lambda p: _save_arrays(p, codes=np.full((8, 4), np.nan, np.float32)),
    "prob": lambda p: _save_arrays(p, prob=np.full(8, 2.0, np.float32)),
    "nopred": lambda p: _save_arrays(p, pred=None),
    "meta": lambda p: _save_arrays(p, meta=np.array("{not json")),
    "pickle": lambda p: np.savez(p, paths=np.array([{"a": 1}], dtype=object), codes=np.ones((1, 4))),
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """The user's folder: photos, a symbolic and a hard link to one, a folder of their own files, image data."""
    w = tmp_path / "w"
    (w / "foreign").mkdir(parents=True)
    (w / "foreign" / "notes.txt").write_text("my notes")
    (w / "foreign" / "overview.png").write_bytes(b"my own picture")
    photo = cv2.resize(skimage.data.chelsea(), (96, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(w / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(w / "other.png"), cv2.cvtColor(cv2.resize(skimage.data.coffee(), (96, 64)), cv2.COLOR_RGB2BGR))
    (w / "link.png").symlink_to(w / "photo.png")
    os.link(w / "photo.png", w / "hard.png")
    (w / "pics").mkdir()
    cv2.imwrite(str(w / "pics" / "original.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    (w / "data").mkdir()
    for i in range(3):
        cv2.imwrite(str(w / "data" / f"{i}.png"), cv2.cvtColor(np.roll(photo, 9 * i, axis=1), cv2.COLOR_RGB2BGR))
    monkeypatch.setenv("DEEPVIS_CACHE", str(w / "cache"))
    return w


def _tree(root: Path) -> dict[str, object]:
    """Every path under root: its link target, or its bytes (None for a folder)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else None if p.is_dir() else p.read_bytes()
    return out


def _fill(argv: list[str], root: Path) -> list[str]:
    filled = []
    for a in argv:
        if a.startswith("{codes:"):
            path = root / f"{a[7:-1]}.npz"
            CODES[a[7:-1]](path)
            a = str(path)
        filled.append(a.format(w=root, photo=root / "photo.png", other=root / "other.png", link=root / "link.png",
                               hard=root / "hard.png", o=root / "out", foreign=root / "foreign", data=root / "data"))
    return filled


def one_line_refusal(argv: list[str], root: Path, capsys) -> str:
    """Run the CLI; assert exit 2, one error line alone on stderr, nothing on stdout, nothing written or changed."""
    before = _tree(root)
    photo = (root / "photo.png").read_bytes()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {argv}: {err}"
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1 and "\r" not in err, f"not one line alone: {err!r}"
    assert err.startswith("deepvis: error: ") and "Traceback" not in err
    after = _tree(root)
    assert after.keys() == before.keys(), f"appeared: {sorted(after.keys() - before.keys())}, " \
                                          f"gone: {sorted(before.keys() - after.keys())}"
    assert [k for k in before if before[k] != after[k]] == [], "changed"
    assert (root / "photo.png").read_bytes() == photo
    return err.strip()


CASES = [
    # ------------------------------------------------ an output is an input or another output (also via links)
    ("occlude", ["{photo}", "--class", "1", "--out", "{photo}"], "--out {photo} is the input IMAGE"),
    ("occlude", ["{photo}", "--class", "1", "--out", "{link}"], "is the input IMAGE"),
    ("occlude", ["{photo}", "--class", "1", "--out", "{hard}"], "is the input IMAGE"),
    ("segment", ["{photo}", "--out", "{photo}"], "is the input IMAGE"),
    ("segment", ["{photo}", "--out", "{w}/m.png", "--cutout", "{w}/m.png"], "--out and --cutout name the same file"),
    ("segment", ["{photo}", "--cutout", "{w}/m.png", "--saliency", "{w}/./m.png"], "name the same file"),
    ("segment", ["{photo}", "--out", "{w}/mask.png", "--cutout", "{w}/no/c.png"], "folder does not exist"),
    ("fool", ["{photo}", "--target", "1", "--out", "{photo}"], "is the input IMAGE"),
    ("fool", ["{photo}", "--target", "1", "--out", "{w}/a.png", "--diff", "{w}/a.png"], "name the same file"),
    ("attribute", ["{photo}", "--layer", "_blocks.3", "--unit", "0", "--overlay", "--out", "{link}"],
     "is the input IMAGE"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--out", "{photo}"], "is the input IMAGE"),
    ("style", ["{photo}", "{other}", "--out", "{other}"], "is the input STYLE"),
    ("style", ["{photo}", "{other}", "--out", "{hard}"], "is the input CONTENT"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--out", "{foreign}"], "other files in it"),
    ("invert", ["{w}/pics/original.png", "--layers", "_blocks.3", "--out", "{w}/pics", "--force"],
     "--out original.png"),
    ("invert", ["{photo}", "--layers", "original", "--out", "{o}"], "would be written to original.png"),
    ("invert", ["{photo}", "--layers", "a/b,a_b", "--out", "{o}"], "would be written to a_b.png"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--out", "{w}/no/dir"], "does not exist"),
    ("embed", ["{data}", "--out", "{foreign}"], "other files in it"),
    ("embed", ["{codes:good}", "--out", "{foreign}"], "other files in it"),
    ("embed", ["{data}", "--out", "{photo}"], "exists and is not a folder"),
    ("embed", ["{data}", "--out", "{data}", "--force"], "is the DATA folder"),
    ("optimize-layer", ["--layer", "_blocks.3", "--out", "{foreign}"], "other files in it"),
    ("optimize", ["--class", "1", "--out", "{w}/no/x.png"], "folder does not exist"),
    # ------------------------------------------------ numbers: bounds, nan, inf, negatives, all before any work
    ("occlude", ["{photo}", "--class", "1", "--window", "0", "--out", "{o}.png"], "--window"),
    ("occlude", ["{photo}", "--class", "1", "--window", "100000", "--out", "{o}.png"], "--window"),
    ("occlude", ["{photo}", "--class", "1", "--window", "300", "--out", "{o}.png"], "larger than the network's"),
    ("occlude", ["{photo}", "--class", "1", "--stride", "-1", "--out", "{o}.png"], "--stride"),
    ("occlude", ["{photo}", "--class", "1", "--batch", "1000000000", "--out", "{o}.png"], "--batch"),
    ("occlude", ["{photo}", "--layer", "_blocks.3", "--unit", "-1", "--out", "{o}.png"], "--unit"),
    ("occlude", ["{photo}", "--layer", "_blocks.3", "--unit", "0", "--y", "1", "--out", "{o}.png"], "both --y"),
    ("segment", ["{photo}", "--smooth", "100000000"], "--smooth"),
    ("segment", ["{photo}", "--smooth", "-1"], "--smooth"),
    ("segment", ["{photo}", "--noise", "nan"], "--noise"),
    ("segment", ["{photo}", "--noise", "inf"], "--noise"),
    ("segment", ["{photo}", "--fg-quantile", "nan"], "--fg-quantile"),
    ("segment", ["{photo}", "--bg-quantile", "1"], "--bg-quantile"),
    ("segment", ["{photo}", "--bg-quantile", "0.6", "--fg-quantile", "0.5"], "must be below --fg-quantile"),
    ("fool", ["{photo}", "--target", "1", "--gain", "nan", "--out", "{o}.png"], "--gain"),
    ("fool", ["{photo}", "--target", "1", "--gain", "0", "--out", "{o}.png"], "--gain"),
    ("fool", ["--from", "noise", "--target", "1", "--seed", "-1", "--out", "{o}.png"], "--seed"),
    ("fool", ["{photo}", "--target", "1", "--eps", "inf", "--out", "{o}.png"], "--eps"),
    ("fool", ["{photo}", "--target", "1", "--step", "nan", "--out", "{o}.png"], "--step"),
    ("fool", ["{photo}", "--target", "1", "--steps", "1000000000", "--out", "{o}.png"], "--steps"),
    ("fool", ["--from", "noise", "--target", "1", "--confidence", "1", "--out", "{o}.png"], "--confidence"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--fps", "inf", "--out", "{o}.mp4"], "--fps"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--fps", "0", "--out", "{o}.mp4"], "--fps"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--frames", "1000000000", "--out", "{o}.mp4"], "--frames"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--lr", "inf", "--out", "{o}.png"], "--lr"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--lr", "nan", "--out", "{o}.png"], "--lr"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--size", "100000", "--out", "{o}.png"], "--size"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--octaves", "0", "--out", "{o}.png"], "--octaves"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--octave-scale", "nan", "--out", "{o}.png"], "--octave-scale"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--zoom", "inf", "--out", "{o}.mp4"], "--zoom"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--jitter", "-1", "--out", "{o}.png"], "--jitter"),
    ("dream", ["{photo}", "--layer", "_blocks.3", "--seed", "-1", "--out", "{o}.png"], "--seed"),
    ("style", ["{photo}", "{other}", "--size", "100000", "--out", "{o}.png"], "--size"),
    ("style", ["{photo}", "{other}", "--lr", "inf", "--out", "{o}.png"], "--lr"),
    ("style", ["{photo}", "{other}", "--style-weight", "nan", "--out", "{o}.png"], "--style-weight"),
    ("style", ["{photo}", "{other}", "--content-weight", "-1", "--out", "{o}.png"], "--content-weight"),
    ("style", ["{photo}", "{other}", "--steps", "1e9", "--out", "{o}.png"], "--steps"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--size", "100000", "--out", "{o}"], "--size"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--tv-weight", "nan", "--out", "{o}"], "--tv-weight"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--lr", "inf", "--out", "{o}"], "--lr"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--alpha-weight", "-1", "--out", "{o}"], "--alpha-weight"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--seed", "-1", "--out", "{o}"], "--seed"),
    ("embed", ["{data}", "--perplexity", "inf", "--out", "{o}"], "--perplexity"),
    ("embed", ["{data}", "--perplexity", "nan", "--out", "{o}"], "--perplexity"),
    ("embed", ["{data}", "--seed", "-1", "--out", "{o}"], "--seed"),
    ("embed", ["{data}", "--seed", "4294967296", "--out", "{o}"], "--seed"),
    ("embed", ["{data}", "--batch-size", "0", "--out", "{o}"], "--batch-size"),
    ("embed", ["{data}", "--workers", "-1", "--out", "{o}"], "--workers"),
    ("embed", ["{data}", "--thumb-size", "1000", "--out", "{o}"], "--thumb-size"),
    ("embed", ["{data}", "--checkpoint-every", "0", "--out", "{o}"], "--checkpoint-every"),
    ("embed", ["{w}/nothing", "--out", "{o}"], "DATA not found"),
    ("filters", ["--seed", "-1", "--out", "{o}.png"], "--seed"),
    ("filters", ["--seed", "99999999999999999999999", "--out", "{o}.png"], "--seed"),
    ("filters", ["--zoom", "100000", "--out", "{o}.png"], "--zoom"),
    ("filters", ["--filters", "5-3", "--out", "{o}.png"], "runs down"),
    ("scan", ["{data}", "--out", "{o}", "--top-k", "0"], "--top-k"),
    ("scan", ["{data}", "--out", "{o}", "--batch-size", "-1"], "--batch-size"),
    ("scan", ["{data}", "--out", "{o}", "--workers", "-1"], "--workers"),
    ("scan", ["{data}", "--out", "{o}", "--checkpoint-every", "0"], "--checkpoint-every"),
    ("topk", ["{o}", "--unit", "-1"], "--unit"),
    ("optimize", ["--layer", "_fc", "--unit", "3", "--y", "0", "--x", "0", "--out", "{o}.png"], "no positions"),
    ("optimize-layer", ["--layer", "_blocks.3", "--units", "5-3", "--out", "{o}"], "runs down"),
    ("run", ["--headless", "--source", "{photo}", "--exit-after", "nan"], "--exit-after"),
    # ------------------------------------------------ refused by the core at its first step: still no bar drawn
    ("occlude", ["{photo}", "--layer", "_blocks.3", "--unit", "9999", "--out", "{o}.png"], "out of range"),
    ("style", ["{photo}", "{other}", "--size", "16", "--out", "{o}.png"], "too small"),
    ("invert", ["{photo}", "--layers", "_blocks.3", "--size", "16", "--out", "{o}"], "too small"),
    ("dream", ["{photo}", "--layer", "_blocks.10", "--size", "16", "--out", "{o}.png"], "too small"),
    ("run", ["--headless", "--source", "{photo}", "--exit-after", "-1"], "--exit-after"),
    ("run", ["--headless", "--source", "{photo}", "--select", "_fc:3:1:1"], "has no positions"),
    ("atlas", ["{o}", "--out", "{w}/site", "--quality", "0"], "--quality"),
    ("evaluate", ["{photo}", "--method", "gradcam", "--seed", "-1"], "--seed"),
    ("ablate", ["{photo}", "--layer", "_blocks.3", "--units", "0", "--mode", "scale:nan"], "--mode"),
    ("rank", ["{photo}", "--layer", "_blocks.3", "--batch", "0"], "--batch"),
    # ------------------------------------------------ damaged or crafted codes.npz
    ("embed", ["{codes:rows}", "--out", "{o}"], "codes must be real numbers [8 images"),
    ("embed", ["{codes:thumbs}", "--out", "{o}"], "thumbs must be"),
    ("embed", ["{codes:zeros}", "--out", "{o}"], "point the same way"),
    ("embed", ["{codes:truncated}", "--out", "{o}"], "not a codes file"),
    ("embed", ["{codes:empty}", "--out", "{o}"], "not a codes file"),
    ("embed", ["{codes:complex}", "--out", "{o}"], "codes must be real numbers"),
    ("embed", ["{codes:class}", "--out", "{o}"], "class index is out of range"),
    ("embed", ["{codes:negclass}", "--out", "{o}"], "class index is out of range"),
    ("embed", ["{codes:nan}", "--out", "{o}"], "NaN"),
    ("embed", ["{codes:prob}", "--out", "{o}"], "probabilities"),
    ("embed", ["{codes:nopred}", "--out", "{o}"], "no pred array"),
    ("embed", ["{codes:meta}", "--out", "{o}"], "meta data"),
    ("embed", ["{codes:pickle}", "--out", "{o}"], "not a codes file"),
]


@pytest.mark.parametrize("command, argv, message", CASES,
                         ids=[f"{c}-{k}" for k, (c, _a, _m) in enumerate(CASES)])
def test_refused_in_one_line_and_nothing_changes(command, argv, message, root, capsys):
    line = one_line_refusal([command, *_fill(argv, root), *MODEL], root, capsys)
    assert message.format(photo=root / "photo.png") in line, line


def test_every_command_is_in_the_table():
    import argparse
    import importlib

    class Names:  # stands in for argparse's subparsers: collects the names each command module registers
        names: list[str] = []

        def add_parser(self, name: str, **_kw) -> argparse.ArgumentParser:
            self.names.append(name)
            return argparse.ArgumentParser(add_help=False)

    for module in cli.COMMAND_MODULES:
        try:
            importlib.import_module(f"deepvis_app.commands.{module}").register(Names())
        except ModuleNotFoundError:
            continue  # a feature not in this tree
    commands = set(Names.names)
    tried = {c for c, _a, _m in CASES}
    assert commands - tried <= {"layers", "predict"}, sorted(commands - tried)  # those two: tests/test_bad_input.py


def test_every_number_of_every_command_is_bounded():
    """Each option that takes a number parses it with one of the shared bounded types: nan, inf and absurd values
    are refused by argparse itself, before any work (argparse's own tables are read here, not ours)."""
    import argparse

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    checked = 0
    for name, sub in [("deepvis", parser), *subparsers.choices.items()]:
        for action in sub._actions:  # noqa: SLF001
            if action.type is None or action.type is str:
                continue
            assert action.type not in (int, float), f"{name} {action.option_strings}: use a bounded type"
            for text in ("nan", "inf", "-inf", "1e300", "-1e300"):
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(text)
            checked += 1
    assert checked >= 80


# ---------------------------------------------------------------- what --force, --resume and the lock allow


def test_force_writes_into_a_foreign_folder_and_keeps_its_files(root, capsys):
    code = cli.main(["invert", str(root / "photo.png"), "--layers", "_blocks.1", "--steps", "1", "--size", "64",
                     "--out", str(root / "foreign"), "--force", "--quiet", "--json", *MODEL])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    files = sorted(p.name for p in (root / "foreign").iterdir())
    assert files == ["_blocks.1.png", "invert.json", "notes.txt", "original.png", "overview.png"]
    assert (root / "foreign" / "notes.txt").read_text() == "my notes"
    assert json.loads((root / "foreign" / "invert.json").read_text())["layers"] == report["layers"]
    # now the folder is ours: the next run needs no --force
    assert cli.main(["invert", str(root / "photo.png"), "--layers", "_blocks.1", "--steps", "1", "--size", "64",
                     "--out", str(root / "foreign"), "--quiet", *MODEL]) == 0


def test_embed_folder_is_locked_and_a_killed_holder_does_not_block(root, capsys):
    from deepvis_app.topk.store import lock_path, output_lock

    codes = root / "codes.npz"
    _codes(12, 6).save(codes)
    out = root / "emb"
    argv = ["embed", str(codes), "--out", str(out), "--perplexity", "3", "--quiet", *MODEL]
    with output_lock(out):  # another run holds the folder
        line = one_line_refusal(argv, root, capsys)
    assert f"--out {out}: another run is writing it (it holds {out}.lock)" in line
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom deepvis_app.topk.store import output_lock\n"
        f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert "another run is writing it" in one_line_refusal(argv, root, capsys)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert lock_path(out).exists()  # the dead holder's file stays; its lock went with the process
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["codes.npz", "embedding.csv", "embedding.json",
                                                      "embedding.npz", "grid.png", "map.png"]


def test_a_failed_embed_leaves_no_folder_and_no_lock(root, capsys):
    """The zero codes pass every array check and fail in the map, after the lock was taken: the run removes the
    folder and lock file it made (one_line_refusal checks that nothing appeared)."""
    one_line_refusal(["embed", _fill(["{codes:zeros}"], root)[0], "--out", str(root / "o2"), *MODEL], root, capsys)


def test_embed_leaves_its_output_folders_out_of_the_data(root):
    data = root / "data"
    old = data / "map"  # an earlier embedding written inside the data
    old.mkdir()
    cv2.imwrite(str(old / "map.png"), np.zeros((8, 8, 3), np.uint8))
    (old / "embedding.json").write_text("{}")
    new = data / "map2"  # this run's output, not yet an embedding folder
    new.mkdir()
    cv2.imwrite(str(new / "grid.png"), np.zeros((8, 8, 3), np.uint8))
    assert [Path(p).name for p in image_list(data, new)] == ["0.png", "1.png", "2.png"]
    assert len(image_list(data, None)) == 4  # without being told, only marked folders are left out


# ---------------------------------------------------------------- the shared pieces


def test_same_file_through_links_and_before_either_exists(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    (tmp_path / "s.png").symlink_to(a)
    os.link(a, tmp_path / "h.png")
    assert same_file(a, tmp_path / "s.png") and same_file(a, tmp_path / "h.png")
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")
    assert not same_file(a, tmp_path / "b.png") and not same_file(tmp_path / "n1.png", tmp_path / "n2.png")


def test_write_files_is_all_or_nothing_and_names_the_users_path(tmp_path):
    first, second = tmp_path / "first.png", tmp_path / "missing" / "second.png"
    with pytest.raises(OSError) as err:
        write_files({first: b"1", second: b"2"})
    assert err.value.filename == str(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the first file nor a temp file
    write_files({first: b"1", tmp_path / "third.png": b"3"})
    assert first.read_bytes() == b"1" and (tmp_path / "third.png").read_bytes() == b"3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "third.png"]


def test_codes_load_accepts_what_save_writes(tmp_path):
    c = _codes()
    c.save(tmp_path / "c.npz")
    back = Codes.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.codes, c.codes)
    np.testing.assert_array_equal(back.thumbs, c.thumbs)
    assert back.paths == c.paths and back.categories == c.categories and back.layer == c.layer
    with pytest.raises(DeepVisError, match="codes file not found"):
        Codes.load(tmp_path / "none.npz")


def test_core_errors_name_parameters_and_the_cli_names_flags():
    err = ParamError("thumb", "must be between 0 and 256 pixels, got 300")
    assert str(err) == "thumb must be between 0 and 256 pixels, got 300"
    assert err.flag_message(cli.FLAGS) == "--thumb-size must be between 0 and 256 pixels, got 300"
    assert ParamError("top_k", "must be at least 1").flag_message(cli.FLAGS) == "--top-k must be at least 1"
