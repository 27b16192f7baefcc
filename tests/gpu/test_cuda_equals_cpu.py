"""CUDA gives the CPU's results: the three attribution rules on three architectures, the grid, receptive-field
boxes and occlusion maps with their fast paths taken (TF32 off for the comparison)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpu_common import ARCHITECTURES, full_float32, model, needs_cuda, relative_error

from deepvis_app.values import Unit

pytestmark = needs_cuda


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_attribution_rules(name, frames):
    """gradient, deconv and guided maps of one neuron: the CPU crops its backward to the gradient's box, CUDA runs
    it dense; both must give the same maps."""
    from deepvis_app.attribution import explain_unit

    layer = ARCHITECTURES[name]
    cpu, gpu = model(name, "cpu"), model(name, "cuda")
    info = cpu.info(layer)
    h, w = info.grid
    unit = Unit(layer, 3, h // 2, w // 3)  # a position given: no argmax ties to resolve differently
    x = cpu.preprocess(frames[5])
    want = explain_unit(cpu.net, x, layer, unit)
    with full_float32():
        got = explain_unit(gpu.net, x.cuda(), layer, unit)
    for rule in ("gradient", "deconv", "guided"):
        assert got[rule].device.type == "cuda"
        assert relative_error(got[rule], want[rule]) < 1e-3, (name, rule)
        assert want[rule].abs().max() > 0, (name, rule)  # a real map, not two zeros


def test_grid_and_one_packed_copy(frames):
    from deepvis_app.layouts import as_maps
    from deepvis_app.probe import Capture
    from deepvis_app.render import grid_parts, render_grid, to_host

    vm = model("efficientnet_lite0", "cpu")
    layer = ARCHITECTURES["efficientnet_lite0"]
    with torch.no_grad(), Capture(vm.net, [layer]) as cap:
        cap.run(vm.preprocess(frames[0]))
    maps = as_maps(cap[layer], vm.info(layer))[0]
    for norm in ("layer", "channel"):
        want = render_grid(maps, norm=norm, min_tile=8)
        parts = grid_parts(maps.cuda(), norm=norm, min_tile=8)
        got = parts.finish(to_host(parts.tensors()))
        assert got.layout == want.layout and got.signed == want.signed
        np.testing.assert_allclose(got.channel_max, want.channel_max, rtol=1e-6)
        diff = np.abs(got.image.astype(int) - want.image.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # float rounding at a .5 boundary at most


@pytest.mark.parametrize("name, layers", [("efficientnet_lite0", ["_conv_stem", "_blocks.3", "_blocks.10"]),
                                          ("torchvision:resnet50", ["maxpool", "layer1", "layer2.0.conv2"])])
def test_receptive_field_boxes(name, layers):
    from deepvis_app.receptive_field import rf_box, rf_geometry, rf_is_local

    cpu, gpu = model(name, "cpu"), model(name, "cuda")
    for layer in layers:
        assert rf_geometry(gpu.net, layer, 224) == rf_geometry(cpu.net, layer, 224), layer
        assert rf_box(gpu.net, layer, 3, 5, 224) == rf_box(cpu.net, layer, 3, 5, 224)
        assert rf_is_local(gpu.net, layer, 224) == rf_is_local(cpu.net, layer, 224)


def test_occlusion_fast_paths_are_taken_and_equal_the_cpu(frames):
    """On the GPU the self-checks run in full float32 with the GPU's tolerance: the faster copy and the incremental
    plan are both used (nothing said), and the map is the CPU's."""
    from deepvis_app.occlusion import occlusion_map

    cpu, gpu = model("efficientnet_lite0", "cpu"), model("efficientnet_lite0", "cuda")
    heard: list[str] = []
    want = occlusion_map(cpu, frames[3], 7, window=32, stride=32, batch=16)
    with full_float32():
        got = occlusion_map(gpu, frames[3], 7, window=32, stride=32, batch=16, on_notice=heard.append)
    assert heard == []
    assert got.note.startswith("incremental up to") and "BatchNorm folded" in got.note, got.note
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-3, atol=1e-6)
    assert (got.labels == want.labels).float().mean() > 0.95  # random weights: a near tie may flip a label


def test_occlusion_unit_target_exact_path(frames):
    """Incremental inference off: the plain batched path on CUDA equals the CPU's too."""
    from deepvis_app.occlusion import occlusion_map

    cpu, gpu = model("torchvision:resnet50", "cpu"), model("torchvision:resnet50", "cuda")
    target = Unit("layer2", 5)
    want = occlusion_map(cpu, frames[9], target, window=48, stride=44, incremental=False)
    with full_float32():
        got = occlusion_map(gpu, frames[9], target, window=48, stride=44, incremental=False)
    assert relative_error(got.scores, want.scores) < 1e-4
