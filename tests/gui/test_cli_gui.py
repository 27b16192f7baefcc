"""Start-up errors of the window are one line and exit code 2, before any window exists."""

from __future__ import annotations

from deepvis_app.cli import main


def test_bad_source_exits_2(capsys, tmp_path):
    code = main(["--source", str(tmp_path / "nope.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("deepvis: error: ") and "nope.mp4" in err[0]


def test_bad_model_exits_2(capsys):
    code = main(["--model", "no_such_model", "--source", "demo"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown model" in err[0]


def test_bad_select_exits_2(capsys):
    code = main(["--source", "demo", "--select", "_blocks.3:999"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "out of range" in err[0]


def test_scripted_snapshot_and_exit(qapp, tmp_path, monkeypatch, video_path):
    """`deepvis --source VIDEO --select L:U --snapshot DIR --exit-after S` writes the snapshot and returns 0."""
    import json

    monkeypatch.setenv("DEEPVIS_SETTINGS", str(tmp_path / "settings.ini"))
    out = tmp_path / "snap"
    code = main(["--source", video_path, "--select", "_blocks.3:4", "--fps", "8", "--device", "cpu",
                 "--snapshot", str(out), "--exit-after", "2"])
    assert code == 0
    state = json.loads((out / "state.json").read_text())
    assert state["unit"] == "_blocks.3:4" and state["shown_unit"] == "_blocks.3:4" and state["source"] == "photos.avi"
    assert (out / "window.png").stat().st_size > 1000
    assert (tmp_path / "settings.ini").is_file()  # layout remembered


def test_bad_store_exits_2(capsys, tmp_path):
    code = main(["--source", "demo", "--store", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a top-k store" in err[0]
