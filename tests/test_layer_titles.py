"""`--layer` takes the titles the window shows as well as module names; an unknown layer's error lists the
curated titles first."""

from __future__ import annotations

import numpy as np

from deepvis_app.cli import main


def test_titles_resolve_to_module_names(lite0):
    assert lite0.resolve_layer("block 1") == "_blocks.1"
    assert lite0.resolve_layer("Block 3 ReLU6") == "_blocks.3._swish@1"
    assert lite0.resolve_layer("block 3 (40 @ 28x28)") == "_blocks.3"
    assert lite0.resolve_layer("_blocks.7") == "_blocks.7" and lite0.resolve_layer("_swish") == "_swish"


def test_cli_layer_title_and_unknown_layer_message(tmp_path, capsys, chelsea_png):
    out = tmp_path / "a.npy"
    assert main(["attribute", chelsea_png, "--layer", "block 1", "--unit", "3", "--method", "gradient",
                 "--out", str(out), "--weights", "random", "--device", "cpu"]) == 0
    assert np.load(out).shape == (3, 224, 224)
    capsys.readouterr()
    assert main(["optimize", "--layer", "block 99", "--unit", "3", "--out", str(tmp_path / "o.png"),
                 "--weights", "random", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "curated: 'conv stem' (_conv_stem)" in err[0]
    assert err[0].index("curated:") < err[0].index("all layers:")
