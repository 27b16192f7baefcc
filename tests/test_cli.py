"""The CLI end to end (in-process): JSON outputs with their documented fields, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepvis_app.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json(capsys, chelsea_png):
    code, out, _ = run_cli(capsys, "predict", chelsea_png, "--json", "--device", "cpu")
    data = json.loads(out)
    assert code == 0 and data[0]["image"] == chelsea_png
    preds = data[0]["predictions"]
    assert len(preds) == 5 and set(preds[0]) == {"index", "label", "prob"}
    assert preds[0]["label"] in {"Egyptian cat", "tabby", "tiger cat"}
    assert abs(sum(p["prob"] for p in preds) - 1) < 0.2 and preds[0]["prob"] >= preds[1]["prob"]


def test_layers_json_and_model_before_subcommand(capsys):
    code, out, _ = run_cli(capsys, "--device", "cpu", "layers", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[-1] == {"name": "_fc", "kind": "Linear", "shape": [1000],
                                       "title": "class logits (1000)"}
    code, out, err = run_cli(capsys, "--model", "nope", "layers")
    assert code == 2 and "unknown model 'nope'" in err and out == ""


def test_headless_run_json(capsys, video_file):
    code, out, _ = run_cli(capsys, "run", "--headless", "--source", video_file, "--frames", "5", "--fps", "0",
                           "--layer", "_blocks.7", "--json", "--device", "cpu")
    data = json.loads(out)
    assert code == 0
    for key in ("frames_processed", "frames_dropped", "pipeline_fps", "latency_ms_p50", "latency_ms_p95",
                "capture_fps", "model", "device", "layer", "stage_ms_mean"):
        assert key in data
    assert data["frames_processed"] == 5 and data["layer"] == "_blocks.7" and data["frames_dropped"] == 0


@pytest.mark.parametrize("argv, message", [
    (["predict", "/no/such.jpg"], "image not found: /no/such.jpg"),
    (["run", "--headless", "--source", "/no/such.mp4"], "video not found: /no/such.mp4"),
    (["run", "--headless", "--source", "demo", "--layer", "bogus"], "unknown layer 'bogus'"),
    (["run", "--headless", "--source", "demo", "--select", "_blocks.3:99"], "valid units are 0..39"),
    (["run", "--headless", "--source", "7"], "camera 7"),
    (["layers", "--device", "cuda:0"], "--device cuda:0: CUDA is not available on this machine"),
    (["layers", "--device", "gpu"], "--device 'gpu' is not a device: use auto, cpu, cuda or cuda:N"),
    (["predict", "{tmp}/x.jpg"], "not a readable image (corrupt"),
    (["layers", "--weights", "/no/w.pth"], "weights file not found"),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    (tmp_path / "x.jpg").write_bytes(b"junk")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(capsys, *argv, *([] if "--device" in argv else ["--device", "cpu"]))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("deepvis: error: ") and message in err


def test_python_dash_m_is_the_same_program(chelsea_png):
    proc = subprocess.run([sys.executable, "-m", "deepvis_app", "predict", chelsea_png, "--json", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["predictions"][0]["index"] in (281, 282, 285)
    bad = subprocess.run([sys.executable, "-m", "deepvis_app", "predict", "/nope.png"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_window_or_command_is_chosen_by_the_cli():
    """Bare `deepvis` and `deepvis run` without --headless open the window through the CLI's one door into the GUI
    (`launch_gui`); `run --headless` and other subcommands run their own function."""
    from deepvis_app import cli
    from deepvis_app.commands import run as run_command

    parser = cli.build_parser()
    assert cli.command_func(parser.parse_args([])) is cli.launch_gui
    assert cli.command_func(parser.parse_args(["run"])) is cli.launch_gui
    assert cli.command_func(parser.parse_args(["run", "--headless"])) is run_command.run
    assert cli.command_func(parser.parse_args(["layers"])).__module__ == "deepvis_app.commands.layers"
