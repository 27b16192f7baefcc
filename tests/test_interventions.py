"""Interventions (deepvis_app/interventions, `deepvis ablate`, `deepvis rank`): the intervened forward equals a
hand-written hook bit for bit on three architectures; the activation x gradient ranking equals Captum's; the
batched ablation drop equals one naive forward per channel; the commands' JSON and one-line errors."""

from __future__ import annotations

import json
import threading

import cv2
import pytest
import torch
from helpers import hooks_left
from torch import nn

from deepvis_app.cli import main
from deepvis_app.errors import DeepVisError, ParamError
from deepvis_app.interventions import (
    Intervened,
    Intervention,
    RecentMeans,
    Replay,
    layer_mean,
    rank_ablation,
    rank_gradxact,
    title_note,
)
from deepvis_app.probe import Capture, layer_table
from deepvis_app.values import ClassTarget

ESPRESSO = 967


# -- the value type ----------------------------------------------------------------------------------------------

def test_intervention_parse_and_str_round_trip():
    iv = Intervention.parse("_blocks.10:17,3")
    assert (iv.layer, iv.channels, iv.mode, iv.kind, iv.value, iv.enabled) == ("_blocks.10", (3, 17), "zero",
                                                                               "zero", None, True)
    assert str(iv) == "_blocks.10:3,17:zero"
    iv = Intervention.parse("layer1.0.relu@0:0-3,9:scale:2.0:off")
    assert iv.channels == (0, 1, 2, 3, 9) and iv.mode == "scale:2" and iv.value == 2.0 and not iv.enabled
    assert str(iv) == "layer1.0.relu@0:0-3,9:scale:2:off" and Intervention.parse(str(iv)) == iv
    for text in ("a.b:5:clamp:-1.5", "a:1,2:mean", "a:4:scale:0.1"):
        assert Intervention.parse(str(Intervention.parse(text))) == Intervention.parse(text)
    assert iv.toggled().enabled and iv.toggled().toggled() == iv
    assert title_note([iv, Intervention.parse("a:5:clamp:3")]) == "[intervened: a 5 =3]"
    assert title_note([iv]) == ""


def test_the_value_type_loads_without_torch():
    """The app state and snapshots hold interventions without loading the compute core."""
    import subprocess
    import sys

    code = ("import sys; from deepvis_app.interventions import Intervention, title_note; "
            "print(title_note([Intervention.parse('a:1')]), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[intervened:", "a", "1", "zeroed]", "False"]


@pytest.mark.parametrize(("text", "param", "words"), [
    ("_blocks.10", "intervention", "LAYER:CHANNELS"),
    ("_blocks.10:x", "channels", "channel numbers"),
    ("_blocks.10:5-2", "channels", "backwards"),
    ("_blocks.10:3:scale", "mode", "needs a value"),
    ("_blocks.10:3:scale:nan", "mode", "finite"),
    ("_blocks.10:3:zero:1", "mode", "takes no value"),
    ("_blocks.10:3:boost", "mode", "zero, mean, clamp:V or scale:F"),
])
def test_intervention_parse_errors_name_the_parameter(text, param, words):
    with pytest.raises(ParamError) as err:
        Intervention.parse(text)
    assert err.value.param == param and words in str(err.value) and "\n" not in str(err.value)


# -- exactness against hand-written hooks ------------------------------------------------------------------------

def hand_hook(net: nn.Module, module: nn.Module, call: int, edit) -> list:
    """A plain forward hook that edits the output of `module`'s call number `call` (counted per forward)."""
    calls = {"n": 0}

    def reset(*_):
        calls["n"] = 0

    def hook(_m, _i, out):
        k = calls["n"]
        calls["n"] += 1
        if k == call:
            out = out.clone()
            edit(out)
            return out
        return None

    return [net.register_forward_pre_hook(reset), module.register_forward_hook(hook)]


def intervened_vs_hand(net, x, interventions, hand, **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        plain = net(x)
        with Intervened(net, interventions, example=x, **kw):
            ours = net(x)
        handles = [h for args in hand for h in hand_hook(net, *args)]
        try:
            theirs = net(x)
        finally:
            for h in handles:
                h.remove()
    return plain, ours, theirs


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """torchvision's ResNet-18 with seeded random weights (every test leaves it without hooks)."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_exact_resnet_unit_in_residual_block_and_shared_relu(resnet):
    net = resnet
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def zero_3_17(out):
        out[:, [3, 17]] = 0

    def double_5(out):
        out[:, [5]] *= 2

    ivs = [Intervention.parse("layer2.0.bn2:3,17:zero"), Intervention.parse("layer1.0.relu@0:5:scale:2")]
    plain, ours, theirs = intervened_vs_hand(net, x, ivs, [(net.layer2[0].bn2, 0, zero_3_17),
                                                           (net.layer1[0].relu, 0, double_5)])
    assert torch.equal(ours, theirs) and not torch.equal(ours, plain)
    # the shared ReLU's second call is untouched: hooking call 1 instead gives other logits
    handles = hand_hook(net, net.layer2[0].bn2, 0, zero_3_17) + hand_hook(net, net.layer1[0].relu, 1, double_5)
    with torch.no_grad():
        wrong = net(x)
    for h in handles:
        h.remove()
    assert not torch.equal(ours, wrong)
    assert hooks_left(net) == []


def test_gradients_flow_through_interventions(resnet):
    """Explanations of an intervened network: the input gradient through an intervened inplace ReLU equals the
    hand-written hook's (the intervention edits a copy, never a tensor autograd saved)."""
    net = resnet
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))

    def double_5(out):
        out[:, [5]] *= 2

    def input_grad(context) -> torch.Tensor:
        xg = x.clone().requires_grad_()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # oneDNN's multi-threaded conv backward differs in the last bits from run to run
        try:
            with context:
                net(xg)[0, 3].backward()
        finally:
            torch.set_num_threads(threads)
        return xg.grad

    ours = input_grad(Intervened(net, [Intervention.parse("layer1.0.relu@0:5:scale:2")], example=x))
    handles = hand_hook(net, net.layer1[0].relu, 0, double_5)
    try:
        from contextlib import nullcontext

        theirs = input_grad(nullcontext())
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(ours, theirs) and not torch.equal(ours, input_grad(nullcontext()))


def test_exact_lite0_reused_swish(lite0, photos):
    net, x = lite0.net, lite0.preprocess(photos["coffee"])

    def clamp(out):
        out[:, [7, 20]] = 1.5

    def zero(out):
        out[:, [3, 17]] = 0

    ivs = [Intervention.parse("_blocks.3._swish@1:7,20:clamp:1.5"), Intervention.parse("_blocks.10:3,17")]
    with torch.no_grad():
        plain = net(x)
        # the probe is entered first, the interventions still run before it on the same module
        with Capture(net, ["_blocks.3._swish@1", "_blocks.3._swish@0"], example=x) as cap, \
                Intervened.for_model(lite0, ivs) as iv:
            ours = cap.run(x)
        handles = hand_hook(net, net._blocks[3]._swish, 1, clamp) + hand_hook(net, net._blocks[10], 0, zero)
        try:
            theirs = net(x)
        finally:
            for h in handles:
                h.remove()
    assert iv and torch.equal(ours, theirs) and not torch.equal(ours, plain)
    assert bool((cap["_blocks.3._swish@1"][:, [7, 20]] == 1.5).all())  # the probe sees the intervened values
    assert not bool((cap["_blocks.3._swish@0"][:, [7, 20]] == 1.5).all())  # the other call is untouched


class TinyConvNeXt(nn.Module):
    """A patchify stem and two real ConvNeXt blocks (torchvision's CNBlock: depthwise conv, Permute, LayerNorm,
    Linear, GELU, Linear, Permute, layer scale, residual): `blocks.0.block.4` is a channels-last GELU map."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.convnext import CNBlock, LayerNorm2d

        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), LayerNorm2d(16))
        self.blocks = nn.Sequential(CNBlock(16, 1.0, 0.0), CNBlock(16, 1.0, 0.0))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def test_exact_channels_last_convnext_block():
    torch.manual_seed(0)
    net = TinyConvNeXt().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    table = layer_table(net, x)
    assert next(i for i in table if i.name == "blocks.0.block.4").layout.value == "channels-last"

    def edit(out):  # channels are the last dimension here
        out[..., [1, 9]] = 0
        out[..., [40]] *= -3

    ivs = [Intervention.parse("blocks.0.block.4:1,9"), Intervention.parse("blocks.0.block.4:40:scale:-3")]
    plain, ours, theirs = intervened_vs_hand(net, x, ivs, [(net.blocks[0].block[4], 0, edit)], info=table)
    assert torch.equal(ours, theirs) and not torch.equal(ours, plain)


def test_token_layer_changes_the_grid_not_the_class_token():
    import layout_nets

    net = layout_nets.tokens()
    x = torch.randn(1, 3, layout_nets.SIZE, layout_nets.SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), Capture(net, ["act"], example=x) as plain:
        plain.run(x)
    with torch.no_grad(), Intervened(net, [Intervention.parse("act:2:clamp:5")], example=x), \
            Capture(net, ["act"], example=x) as cap:
        cap.run(x)
    grid = layout_nets.tokens_by_hand(cap["act"])
    assert bool((grid[:, 2] == 5).all()) and torch.equal(cap["act"][:, 0], plain["act"][:, 0])
    assert torch.equal(grid[:, 3], layout_nets.tokens_by_hand(plain["act"])[:, 3])


def test_mean_modes_and_checks(resnet):
    net = resnet
    xs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in (4, 5)]
    table = layer_table(net, xs[0])
    info = next(i for i in table if i.name == "layer1")
    mean = layer_mean(net, xs, "layer1", info)
    with torch.no_grad(), Capture(net, ["layer1"], example=xs[0]) as cap:
        acts = [(cap.run(x), cap["layer1"])[1] for x in xs]
    assert torch.allclose(mean, (acts[0] + acts[1])[0] / 2, atol=1e-6)
    pos = layer_mean(net, xs[:1], "layer1", info, over_positions=True)
    assert pos.shape == (64, 1, 1) and torch.allclose(pos[:, 0, 0], acts[0][0].mean(dim=(1, 2)), atol=1e-6)
    iv = Intervention.parse("layer1:4,6:mean")
    with torch.no_grad(), Intervened(net, [iv], info=table, means={"layer1": pos}, example=xs[0]), \
            Capture(net, ["layer1"], example=xs[0]) as cap:
        cap.run(xs[0])
        assert torch.equal(cap["layer1"][0, 4], pos[4, 0, 0].expand(8, 8))
    recent = RecentMeans(frames=2)
    with torch.no_grad(), Intervened(net, [iv], info=table, means=recent, example=xs[0]), \
            Capture(net, ["layer1"], example=xs[0]) as cap:
        cap.run(xs[0])
        assert torch.equal(cap["layer1"][0, 4], acts[0][0, 4])  # first frame: its own mean
        cap.run(xs[1])
        assert torch.allclose(cap["layer1"][0, 4], (acts[0][0, 4] + acts[1][0, 4]) / 2, atol=1e-6)
    with pytest.raises(DeepVisError, match="mode mean needs"):
        Intervened(net, [iv], info=table, example=xs[0])
    with pytest.raises(DeepVisError, match="expected 64 x 8 x 8"):
        Intervened(net, [iv], info=table, means={"layer1": torch.zeros(64, 3, 3)}, example=xs[0])
    with pytest.raises(DeepVisError, match=r"unit 64 is out of range for layer 'layer1': valid units are 0\.\.63"):
        Intervened(net, [Intervention.parse("layer1:64")], info=table, example=xs[0])
    # disabled interventions do nothing and need nothing
    assert not Intervened(net, [iv.toggled(False)])


def test_hooks_touch_only_the_entering_thread_and_go_away(resnet):
    net = resnet
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = net(x)
        got = {}
        iv = Intervened(net, [Intervention.parse("layer1:0-63")], example=x)
        with iv:
            t = threading.Thread(target=lambda: got.setdefault("other", net(x)))
            t.start()
            t.join()
            mine = net(x)
        assert torch.equal(got["other"], plain) and not torch.equal(mine, plain)
        with pytest.raises(ZeroDivisionError), iv:
            assert net(x) is not None and 1 / 0
        assert torch.equal(net(x), plain) and hooks_left(net) == []
        with iv:  # re-enterable: the live worker enters it once per frame
            assert torch.equal(net(x), mine)


# -- rankings ----------------------------------------------------------------------------------------------------

def test_gradxact_equals_captum_on_the_espresso_photo(lite0, photos):
    from captum.attr import LayerGradientXActivation

    net, x = lite0.net, lite0.preprocess(photos["coffee"])
    ours = rank_gradxact(net, x, "_blocks.10", ClassTarget(ESPRESSO, "logit"), lite0.info("_blocks.10"))
    ref = LayerGradientXActivation(net, net._blocks[10]).attribute(x.clone().requires_grad_(), target=ESPRESSO)
    ref = ref.detach().sum(dim=(2, 3))[0].double()
    assert len(ours.scores) == 112
    assert ours.top(20) == torch.argsort(ref, descending=True)[:20].tolist()
    got = torch.tensor(ours.scores, dtype=torch.float64)
    top = ref.abs().argsort(descending=True)[:20]
    assert bool(((got[top] - ref[top]).abs() <= 1e-5 * ref[top].abs()).all())
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def naive_drops(net, x, layer, channels, target, info) -> list[float]:
    """One full forward per channel with that channel zeroed by a plain Intervened."""
    from deepvis_app.interventions import class_scores

    with torch.no_grad():
        base = float(class_scores(net(x), target)[0])
        out = []
        for c in channels:
            with Intervened(net, [Intervention(layer, (c,))], info=info, example=x):
                out.append(base - float(class_scores(net(x), target)[0]))
    return out


def test_ablation_equals_naive_forwards_lite0(lite0, photos):
    net, x, info = lite0.net, lite0.preprocess(photos["coffee"]), lite0.info("_blocks.10")
    target = ClassTarget(ESPRESSO, "prob")
    replay = Replay(net, x, "_blocks.10", info)
    assert replay.cut == "_blocks.10@0"  # the block's output: only the layers above it rerun
    channels = [48, 102, 0, 111]
    naive = naive_drops(net, x, "_blocks.10", channels, target, lite0.info)
    one = rank_ablation(net, x, "_blocks.10", target, info, channels=channels, batch=1, replay=replay)
    assert list(one.scores) == naive  # batch 1: bit for bit
    batched = rank_ablation(net, x, "_blocks.10", target, info, channels=channels, batch=4, replay=replay)
    assert max(abs(a - b) for a, b in zip(batched.scores, naive, strict=True)) <= 1e-6  # float32 rounding only
    assert batched.base == pytest.approx(0.9423, abs=1e-3) and batched.order()[0] == 102


def test_ablation_inside_a_residual_block_reuses_the_block_input(resnet):
    net = resnet
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    table = layer_table(net, x)
    info = next(i for i in table if i.name == "layer2.0.bn2")
    replay = Replay(net, x, "layer2.0.bn2", info)
    assert replay.cut == "layer1@0"  # bn2's block adds its input back: the block's input is the cut
    target = ClassTarget(3, "logit")
    channels = [0, 17, 64, 127]
    naive = naive_drops(net, x, "layer2.0.bn2", channels, target, table)
    one = rank_ablation(net, x, "layer2.0.bn2", target, info, channels=channels, batch=1, replay=replay)
    assert list(one.scores) == naive
    batched = rank_ablation(net, x, "layer2.0.bn2", target, info, channels=channels, batch=4, replay=replay)
    assert max(abs(a - b) for a, b in zip(batched.scores, naive, strict=True)) <= 1e-5


class InputSkip(nn.Module):
    """The input reaches the logits past every layer: no layer is a cut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)).mean(dim=(2, 3)) + x.mean())


def test_ablation_without_a_cut_runs_whole_forwards():
    torch.manual_seed(0)
    net = InputSkip().eval()
    x = torch.randn(1, 3, 8, 8)
    table = layer_table(net, x)
    info = next(i for i in table if i.name == "relu")
    replay = Replay(net, x, "relu", info)
    assert replay.cut is None and "ran the whole network" in replay.note
    target = ClassTarget(1, "logit")
    ranking = rank_ablation(net, x, "relu", target, info, batch=1)
    assert list(ranking.scores) == naive_drops(net, x, "relu", range(4), target, table)


# -- the commands ------------------------------------------------------------------------------------------------

@pytest.fixture
def model_is(monkeypatch, lite0):
    """The commands get the session's Lite0 instead of loading it again."""
    from deepvis_app.commands import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: lite0)
    return lite0


def write(path, rgb) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def test_cli_ablate_image_json(tmp_path, capsys, photos, model_is):
    img = write(tmp_path / "coffee.png", photos["coffee"])
    rc = main(["ablate", img, "--layer", "block 10", "--units", "top:5", "--class", "espresso", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["layer"] == "_blocks.10" and report["class"] == "espresso"
    x = model_is.preprocess(photos["coffee"])
    ranked = rank_gradxact(model_is.net, x, "_blocks.10", ClassTarget(ESPRESSO, "logit"), model_is.info("_blocks.10"))
    assert report["units"] == ranked.top(5)
    with torch.no_grad():
        before = model_is.net(x).softmax(dim=1)[0]
        with Intervened.for_model(model_is, [Intervention("_blocks.10", tuple(ranked.top(5)))]):
            after = model_is.net(x).softmax(dim=1)[0]
    assert report["prob_before"] == pytest.approx(float(before[ESPRESSO]), abs=1e-6)
    assert report["prob_after"] == pytest.approx(float(after[ESPRESSO]), abs=1e-6)
    assert report["prob_after"] < report["prob_before"] - 0.1
    assert report["top5_before"][0] == {"index": ESPRESSO, "label": "espresso",
                                         "prob": report["prob_before"]}
    assert [set(p) for p in report["top5_after"]] == [{"index", "label", "prob"}] * 5


def test_cli_ablate_top_units_by_ablation(tmp_path, capsys, photos, model_is):
    """The docs' worked example: the 10 units of block 10 whose loss costs espresso most, all off at once."""
    img = write(tmp_path / "coffee.png", photos["coffee"])
    rc = main(["ablate", img, "--layer", "_blocks.10", "--units", "top:10", "--rank-by", "ablation", "--json"])
    report = json.loads(capsys.readouterr().out)  # no --class: the top-1 class before, espresso
    assert rc == 0 and report["units"] == [102, 48, 36, 101, 71, 56, 1, 79, 43, 39]
    assert report["units_from"] == "top:10 by ablation" and report["class"] == "espresso"
    assert report["prob_before"] == pytest.approx(0.9423, abs=1e-3) and report["prob_after"] < 0.05
    assert report["top5_after"][0]["label"] != "espresso"


def test_cli_ablate_folder_accuracy_and_mean(tmp_path, capsys, photos, model_is):
    write(tmp_path / "data" / "espresso" / "a.png", photos["coffee"])
    write(tmp_path / "data" / "Egyptian_cat" / "b.png", photos["chelsea"])
    rc = main(["ablate", str(tmp_path / "data"), "--layer", "_blocks.10", "--units", "0-111", "--mode", "mean",
               "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["labelled"] == 2 and report["mean_over"] == "images (per position)"
    first = report["images"][0]
    assert first["label"] == "Egyptian cat" and first["class"] == "Egyptian cat" and first["correct_before"]
    assert report["accuracy_before"] == 1.0
    assert report["accuracy_after"] == sum(e["correct_after"] for e in report["images"]) / 2
    assert report["accuracy_drop"] == report["accuracy_before"] - report["accuracy_after"]
    # every unit at the folder's mean map: both images become the same image from block 10 on
    assert report["images"][0]["top5_after"] == report["images"][1]["top5_after"]


def test_cli_rank_json(tmp_path, capsys, photos, model_is):
    img = write(tmp_path / "coffee.png", photos["coffee"])
    assert main(["rank", img, "--layer", "_blocks.10", "--json"]) == 0  # class: the top-1, espresso
    rows = json.loads(capsys.readouterr().out)
    x = model_is.preprocess(photos["coffee"])
    ranked = rank_gradxact(model_is.net, x, "_blocks.10", ClassTarget(ESPRESSO, "logit"), model_is.info("_blocks.10"))
    assert [r["channel"] for r in rows] == ranked.order() and len(rows) == 112
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert main(["rank", img, "--layer", "_blocks.10", "--class", "967", "--by", "ablation", "--top", "3",
                 "--json", "--batch", "112"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and rows[0]["channel"] == 102 and rows[0]["score"] > rows[1]["score"] > 0


@pytest.mark.parametrize(("argv", "words"), [
    (["--units", "top:0"], "argument --units: top:N needs N between 1"),
    (["--units", "3,x"], "argument --units: must be channel numbers"),
    (["--units", "3", "--mode", "scale:inf"], "argument --mode: scale: the value must be a finite number"),
    (["--units", "3", "--mode", "clamp"], "argument --mode: clamp needs a value"),
    (["--units", "3", "--path-missing"], "not found:"),
])
def test_cli_ablate_errors_before_the_model_loads(tmp_path, capsys, photos, monkeypatch, argv, words):
    from deepvis_app.commands import common

    def no_load(*_a, **_k):
        raise AssertionError("the model must not load for a bad argument")

    monkeypatch.setattr(common, "load_model", no_load)
    img = write(tmp_path / "coffee.png", photos["coffee"])
    path = str(tmp_path / "missing.png") if "--path-missing" in argv else img
    rc = main(["ablate", path, "--layer", "_blocks.10", *[a for a in argv if a != "--path-missing"]])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1
    if "--path-missing" not in argv:
        empty = tmp_path / "empty"
        empty.mkdir()
        assert main(["ablate", str(empty), "--layer", "x", "--units", "1"]) == 2
        assert "holds no images" in capsys.readouterr().err


def test_cli_ablate_errors_after_the_model_loads(tmp_path, capsys, photos, model_is):
    img = write(tmp_path / "coffee.png", photos["coffee"])
    cases = [(["ablate", img, "--layer", "_blocks.10", "--units", "112"], "unit 112 is out of range"),
             (["ablate", img, "--layer", "_blocks.10", "--units", "top:113"], "more units than layer"),
             (["ablate", img, "--layer", "nope", "--units", "1"], "unknown layer 'nope'"),
             (["ablate", img, "--layer", "_blocks.10", "--units", "1", "--class", "expresso"], "did you mean"),
             (["rank", img, "--layer", "nope"], "unknown layer 'nope'")]
    write(tmp_path / "data" / "not_a_class" / "a.png", photos["coffee"])
    cases.append((["ablate", str(tmp_path / "data"), "--layer", "_blocks.10", "--units", "1"],
                  "sub-folder 'not_a_class' is not one of the model's classes"))
    for argv, words in cases:
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1 and out == "", (argv, err)
