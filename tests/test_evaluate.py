"""Faithfulness metrics: equal to torch-cam (deletion/insertion AUC, average drop/increase; <= 1e-3) and
pytorch-grad-cam (ROAD, same imputer and seed) on the same model, image and map; the sanity check by hand; the
`deepvis evaluate` command on real photos with the pretrained default model."""

from __future__ import annotations

import contextlib
import functools
import json

import pytest
import torch
from torch import nn

from deepvis_app.cli import main
from deepvis_app.evaluate.faithfulness import average_drop_increase, deletion_insertion, road
from deepvis_app.evaluate.sanity import cascading_randomization, parameter_groups, spearman


class FixedMap:
    """A torch-cam extractor that returns a given map, so its metrics score exactly our map."""

    def __init__(self, model: nn.Module, heat: torch.Tensor) -> None:
        self.model, self.heat = model, heat

    def __call__(self, class_idx=None, scores=None, normalized=True, **_):
        return [self.heat]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


@pytest.fixture(scope="module")
def coffee_case(request):
    lite0 = request.getfixturevalue("lite0")
    photos = request.getfixturevalue("photos")
    x = lite0.preprocess(photos["coffee"])
    from deepvis_app.methods.registry import explain

    heat = explain(lite0.net, x, "gradcam", 967, layer="_blocks.15").heat  # espresso
    return lite0, x, heat


def test_deletion_insertion_and_drop_equal_torchcam(coffee_case):
    metrics = pytest.importorskip("torchcam.metrics")
    vm, x, heat = coffee_case
    classes = torch.tensor([967])
    softmax = functools.partial(torch.softmax, dim=-1)
    ref = metrics.DeletionInsertionMetric(FixedMap(vm.net, heat), softmax, steps=10, baseline=torch.zeros_like(x))
    ref.update(x, 967)
    curves = deletion_insertion(vm.net, x, heat, classes, steps=10, fill="grey")
    assert float(curves.deletion_auc[0]) == pytest.approx(ref.summary()["deletion_auc"], abs=1e-3)
    assert float(curves.insertion_auc[0]) == pytest.approx(ref.summary()["insertion_auc"], abs=1e-3)
    # the map is about the cup: adding its pixels first recovers the class far faster than deleting them
    assert float(curves.insertion_auc[0]) > float(curves.deletion_auc[0]) + 0.2
    scaled = (heat - heat.min()) / (heat.max() - heat.min())  # torch-cam's extractors hand it maps in [0, 1]
    cls = metrics.ClassificationMetric(FixedMap(vm.net, scaled), softmax)
    cls.update(x, 967)
    drop, increase = average_drop_increase(vm.net, x, heat, classes)
    assert float(drop[0]) == pytest.approx(cls.summary()["avg_drop"], abs=1e-3)
    assert float(increase.float()[0]) == pytest.approx(cls.summary()["conf_increase"], abs=1e-3)


def test_road_equals_pytorch_grad_cam(coffee_case):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    vm, x, heat = coffee_case
    ours = road(vm.net, x, heat, torch.tensor([967]), percentiles=(20, 80), seed=0)
    for name, metric, column in (("morf", ROADMostRelevantFirst, 1), ("lerf", ROADLeastRelevantFirst, 0)):
        p = (20, 80)[column]
        torch.manual_seed(0)
        theirs = metric(p)(x, heat.numpy(), [ClassifierOutputSoftmaxTarget(967)], vm.net, return_diff=False)
        assert float(ours[name][0, column]) == pytest.approx(float(theirs[0]), abs=1e-3)


def test_spearman_and_cascade_by_hand():
    a = torch.arange(16.0).reshape(4, 4)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(torch.exp(a), a) == pytest.approx(1.0)  # monotone, far from linear: ranks, not values
    assert spearman(a, torch.tensor([3.0, 1, 2, 0] * 4).reshape(4, 4)) < 0.5
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2, 3))
    names = [n for n, _ in parameter_groups(net)]
    assert names == ["4", "2", "0"]  # parameterized children, from the output down
    x = torch.randn(1, 1, 5, 5, generator=torch.Generator().manual_seed(0))

    def compute(model):  # input gradient of class 0
        xi = x.clone().requires_grad_(True)
        model(xi)[0, 0].backward()
        return xi.grad[0, 0]

    steps = cascading_randomization(net, compute, seed=1)
    assert [s["layer"] for s in steps] == names
    assert all(-1.0 <= s["spearman"] <= 1.0 for s in steps)
    assert steps[-1]["spearman"] < 0.99  # every weight re-drawn: the map changed
    assert torch.equal(compute(net), compute(net))  # the original model is untouched (a copy is randomized)


def test_evaluate_command_ranks_gradcam_above_random(tmp_path, photos, capsys):
    from helpers import write_rgb

    folder = tmp_path / "photos"
    folder.mkdir()
    write_rgb(folder / "coffee.png", photos["coffee"])
    write_rgb(folder / "cat.png", photos["chelsea"])
    code = main(["evaluate", str(folder), "--method", "gradcam,random", "--metrics", "deletion,insertion,drop",
                 "--curve-steps", "8", "--json", "--quiet", "--device", "cpu"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    gc, rnd = report["methods"]["gradcam"], report["methods"]["random"]
    assert report["images"] == 2 and len(gc["per_image"]) == 2
    assert gc["insertion_auc"]["value"] > rnd["insertion_auc"]["value"]
    assert gc["average_drop"]["value"] < rnd["average_drop"]["value"]
    assert set(gc) == {"deletion_auc", "insertion_auc", "average_drop", "average_increase", "per_image"}


@pytest.mark.parametrize("argv, words", [
    (["--method", "nocam"], "--method"),
    (["--method", "gradcam", "--metrics", "speed"], "--metrics"),
    (["--method", "gradcam", "--curve-steps", "0"], "--curve-steps"),
    (["--method", "gradcam", "--road-percentiles", "0,50"], "--road-percentiles"),
])
def test_evaluate_bad_input_one_line(tmp_path, photos, capsys, argv, words):
    from helpers import write_rgb

    img = write_rgb(tmp_path / "c.png", photos["coffee"])
    assert main(["evaluate", img, *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
