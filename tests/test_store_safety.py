"""Crafted and damaged stores, permissions, locking, recovery and the scan's own output inside its data.

Every damaged store opened by `deepvis topk` ends as one line `deepvis: error: ...` with exit 2; no path in a
store makes the reader open a file outside it; NPZ files never unpickle.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_topk import ensure_rf_module, write_photos, write_tinynet

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError
from deepvis_app.topk import TopKStore
from deepvis_app.topk.images import list_images
from deepvis_app.topk.scan import scan
from deepvis_app.topk.store import output_lock, publish, recover, staging_path
from deepvis_app.zoo import load_model


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safety")
    ensure_rf_module()
    spec = write_tinynet(tmp)
    sys.path.insert(0, str(tmp))
    sys.modules.pop("tinynet_topk", None)
    try:
        vm = load_model(spec, weights="default", device="cpu")
        write_photos(tmp / "data", bad=False)
        old = os.umask(0o022)
        try:
            scan(vm, tmp / "data", tmp / "store", layers="conv1,fc", top_k=2, batch_size=8, workers=0,
                 progress=False)
        finally:
            os.umask(old)
    finally:
        sys.path.remove(str(tmp))
    return tmp / "store"


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _edit_index(root: Path, fn) -> None:
    index = json.loads((root / "index.json").read_text())
    fn(index)
    (root / "index.json").write_text(json.dumps(index))


def _set_layer(key: str, value):
    def fn(index):
        index["layers"][0][key] = value
    return fn


def _pickled_npz(root: Path) -> None:
    with np.load(root / "layers" / "L000.npz") as d:
        arrays = {k: d[k] for k in d.files}
    arrays["values"] = np.array([object()] * 4, dtype=object)
    (root / "layers" / "L000.npz").write_bytes(_npz_bytes(**arrays))


def _truncate(path: Path, keep: int = 30) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _outside_npz(root: Path) -> None:
    (root.parent / "evil.npz").write_bytes((root / "layers" / "L000.npz").read_bytes())
    _edit_index(root, _set_layer("key", "../../evil"))


def _wrong_shape_npz(root: Path) -> None:
    with np.load(root / "layers" / "L000.npz") as d:
        arrays = {k: d[k] for k in d.files}
    arrays["values"] = arrays["values"][:1]
    (root / "layers" / "L000.npz").write_bytes(_npz_bytes(**arrays))


def _missing_array(root: Path) -> None:
    with np.load(root / "layers" / "L000.npz") as d:
        arrays = {k: d[k] for k in d.files if k != "box"}
    (root / "layers" / "L000.npz").write_bytes(_npz_bytes(**arrays))


def _dir_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


# (name, damage(root), expected words in the error line)
CASES = [
    ("index missing", lambda r: (r / "index.json").unlink(), "no index.json"),
    ("index truncated", lambda r: _truncate(r / "index.json"), "cannot read"),
    ("index not an object", lambda r: (r / "index.json").write_text("[1, 2]"), "not a top-k store"),
    ("index is a directory", lambda r: _dir_instead(r / "index.json"), "not a file"),
    ("layers not a list", lambda r: _edit_index(r, lambda i: i.update(layers="L000")), "layers is not a list"),
    ("top_k a string", lambda r: _edit_index(r, lambda i: i.update(top_k="9")), "top_k"),
    ("channels negative", lambda r: _edit_index(r, _set_layer("channels", -3)), "channel count"),
    ("layer key escapes", _outside_npz, "bad key"),
    ("layer key absolute", lambda r: _edit_index(r, _set_layer("key", "/etc/passwd")), "bad key"),
    ("layer npz missing", lambda r: (r / "layers" / "L000.npz").unlink(), "L000.npz unreadable"),
    ("layer npz truncated", lambda r: _truncate(r / "layers" / "L000.npz", 100), "L000.npz unreadable"),
    ("layer npz garbage", lambda r: (r / "layers" / "L000.npz").write_bytes(b"PK\x03\x04junk"), "unreadable"),
    ("layer npz is a directory", lambda r: _dir_instead(r / "layers" / "L000.npz"), "unreadable"),
    ("layer npz pickled objects", _pickled_npz, "unreadable"),
    ("layer array wrong shape", _wrong_shape_npz, "expected"),
    ("layer array missing", _missing_array, "lacks box"),
    ("images.json missing", lambda r: (r / "images.json").unlink(), "images.json unreadable"),
    ("images.json truncated", lambda r: _truncate(r / "images.json", 5), "images.json unreadable"),
    ("images.json wrong types", lambda r: (r / "images.json").write_text('{"0": 5}'), "id -> path"),
    ("images.json bad id", lambda r: (r / "images.json").write_text('{"zero": "a.png"}'), "non-integer id"),
    ("images.json escapes", lambda r: (r / "images.json").write_text(
        json.dumps({str(i): "../../../etc/passwd" for i in range(40)})), "outside the store"),
    ("images.json is a directory", lambda r: _dir_instead(r / "images.json"), "images.json unreadable"),
]


@pytest.mark.parametrize("name,damage,words", CASES, ids=[c[0] for c in CASES])
def test_damaged_store_is_one_line_exit_2(good_store, tmp_path, capsys, name, damage, words):
    root = tmp_path / "s"
    shutil.copytree(good_store, root)
    damage(root)
    capsys.readouterr()
    rc = main(["topk", str(root), "--layer", "conv1", "--unit", "0"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (name, captured.out, captured.err)
    assert len(lines) == 1 and lines[0].startswith("deepvis: error: ") and words in lines[0], lines
    assert "Traceback" not in captured.err


def test_permission_denied_is_one_line(good_store, tmp_path, capsys, monkeypatch):
    root = tmp_path / "s"
    shutil.copytree(good_store, root)

    real_load = np.load

    def denied(path, *a, **k):
        if str(path).endswith(".npz"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_load(path, *a, **k)

    monkeypatch.setattr(np, "load", denied)
    assert main(["topk", str(root), "--layer", "conv1", "--unit", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Permission denied" in err[0]
    monkeypatch.undo()
    real_read = Path.read_text

    def denied_text(self, *a, **k):
        if self.name == "index.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied_text)
    assert main(["topk", str(root), "--unit", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepvis: error: ") and "Permission denied" in err[0]


def test_reader_never_opens_paths_outside_the_store(good_store, tmp_path, monkeypatch):
    root = tmp_path / "s"
    shutil.copytree(good_store, root)
    store = TopKStore.open(root)
    entry = store.entries("conv1", 0)[0]
    assert entry.path and Path(entry.path).is_absolute()  # the source photo, for display only
    opened = []
    import deepvis_app.topk.store as store_mod

    real = store_mod.read_image
    monkeypatch.setattr(store_mod, "read_image", lambda p: opened.append(Path(p).resolve()) or real(p))
    assert store.crop("conv1", 0, 0) is not None and store.fitted(entry) is not None
    assert opened and all(root.resolve() in p.parents for p in opened)
    # a symlink inside the store that points out is refused like a ../ path
    (root / "images" / f"i{entry.image_id:08d}.png").unlink()
    (root / "images" / f"i{entry.image_id:08d}.png").symlink_to(entry.path)
    with pytest.raises(DeepVisError, match="outside the store"):
        TopKStore.open(root).fitted(entry)


def test_store_files_are_0644_and_no_temp_files(good_store):
    files = [p for p in good_store.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert sorted(p.name for p in good_store.iterdir()) == ["images", "images.json", "index.json", "layers",
                                                            "report.json"]


def test_npz_with_pickle_is_not_unpickled(good_store, tmp_path, monkeypatch):
    root = tmp_path / "s"
    shutil.copytree(good_store, root)
    _pickled_npz(root)
    calls = []
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(1))
    with pytest.raises(DeepVisError, match="unreadable"):
        TopKStore.open(root).entries("conv1", 0)
    assert calls == []
    assert zipfile.is_zipfile(root / "layers" / "L000.npz")


def test_second_writer_gets_one_line(good_store, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(DeepVisError, match="another scan is writing"):
            with output_lock(out):
                pass
    with output_lock(out):  # released
        pass


def test_recover_stranded_old_store(good_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(good_store, out.with_name("store.old-12345"))
    recover(out)  # killed between the two renames: the old store comes back
    assert TopKStore.open(out).layers == ["conv1", "fc"] and not out.with_name("store.old-12345").exists()
    shutil.copytree(good_store, out.with_name("store.old-777"))
    recover(out)  # the store exists: the stranded copy goes
    assert not out.with_name("store.old-777").exists()
    # publishing over an existing store leaves no old copy and drops temp files of killed writes
    staging = staging_path(out)
    shutil.copytree(good_store, staging)
    (staging / "images" / ".i00000001.png.abc.tmp").write_bytes(b"half")
    (staging / "index.json").write_text((staging / "index.json").read_text().replace('"top_k": 2', '"top_k": 2 '))
    publish(staging, out)
    assert not staging.exists() and not list(tmp_path.glob("store.old-*"))
    assert not list(out.rglob("*.tmp"))


def test_scan_skips_stores_inside_its_data(good_store, tmp_path):
    data = tmp_path / "photos"
    write_photos(data, bad=False)
    before = list_images(data)
    shutil.copytree(good_store, data / "topk")
    shutil.copytree(good_store, data / "topk.partial")
    shutil.copytree(good_store / "images", data / "old.old-42")
    shutil.copytree(good_store / "images", data / "nested" / "other_store" / "images")
    shutil.copy(good_store / "index.json", data / "nested" / "other_store" / "index.json")
    assert list_images(data) == before
