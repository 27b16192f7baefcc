"""The live grid, unit map/value/position and live top-k draw every layer in its own layout: a channels-last layer
as one tile per channel (not one per row), a token layer on its patch grid with the class token kept apart, a
vector as 1x1 tiles. Checked by hand on tiny nets built here, and on torchvision's ConvNeXt-T and ViT-B/16 (random
weights, no download)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import Permute

from deepvis_app.errors import DeepVisError
from deepvis_app.pipeline import Frame, FrameProcessor, validate_request
from deepvis_app.probe import Probe
from deepvis_app.render import upscale_map
from deepvis_app.values import Layout, Unit, ViewRequest
from deepvis_app.zoo import ModelSpec, Preprocessor, VisModel

SIZE = 32


class ChannelsLastNet(nn.Module):
    """conv (16x8 maps, stride 2 down, 4 across) -> Permute to NHWC -> Linear 4->6 -> GELU -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=(2, 4), padding=1)
        self.perm = Permute([0, 2, 3, 1])
        self.lin = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.lin(self.perm(self.conv(x))))
        return self.head(y.mean(dim=(1, 2)))


class TokenNet(nn.Module):
    """A patch embedding (8x4 patches of 4x8 px) + a class token in front -> Linear -> GELU -> head on the class."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, kernel_size=(4, 8), stride=(4, 8))
        self.cls = nn.Parameter(torch.randn(1, 1, 8) * 3)
        self.mix = nn.Linear(8, 8)
        self.act = nn.GELU()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
        t = self.act(self.mix(t))
        return self.head(t[:, 0])


def vis_model(net: nn.Module, size: int = SIZE, classes: int = 5) -> VisModel:
    """A spec-less VisModel around a plain nn.Module (frozen, eval), as `load_model` makes one."""
    spec = ModelSpec(name=type(net).__name__, title=type(net).__name__, builder="tests", weights="", input_size=size,
                     resize=size, crop="center", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), labels="")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cpu = torch.device("cpu")
    return VisModel(spec=spec, net=net, device=cpu, categories=[f"class {i}" for i in range(classes)],
                    preprocess=Preprocessor(spec, cpu))


@pytest.fixture(scope="module")
def channels_last() -> VisModel:
    torch.manual_seed(1)
    return vis_model(ChannelsLastNet())


@pytest.fixture(scope="module")
def tokens() -> VisModel:
    torch.manual_seed(2)
    return vis_model(TokenNet())


def frame(photos, name: str = "chelsea", frame_id: int = 0) -> Frame:
    return Frame(frame_id, photos[name], time.perf_counter())


def captured(vm: VisModel, rgb: np.ndarray, layer: str) -> torch.Tensor:
    """The layer's raw output for one photo, from the model as loaded (its own layout, batch of 1)."""
    with Probe(vm.net, [layer], detach=True) as probe, torch.no_grad():
        vm.net(vm.preprocess(rgb))
    return probe[layer][0]


def expected_tile(m: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """A tile by hand (render.normalize's rule): 1 + 254 * v / |max|, zero at mid-gray on signed layers."""
    ratio = m / scale
    return np.round(1 + 254 * (0.5 + 0.5 * ratio if signed else np.clip(ratio, 0, 1)))


def assert_tiles(grid, maps: np.ndarray, *, norm: str) -> None:
    """Every tile of `grid` shows the hand-made channel map `maps[c]` (C x H x W), within one grey level."""
    signed = bool(maps.min() < 0)
    assert grid.signed == signed
    for c, m in enumerate(maps):
        scale = np.abs(maps).max() if norm == "layer" else np.abs(m).max()
        y, x = grid.layout.tile_origin(c)
        h, w = m.shape
        tile = grid.image[y:y + h, x:x + w].astype(int)
        assert np.abs(tile - expected_tile(m, scale, signed)).max() <= 1, c
    assert np.allclose(grid.channel_max, maps.reshape(len(maps), -1).max(axis=1), rtol=1e-4, atol=1e-5)


def test_channels_last_layer_draws_one_tile_per_channel(channels_last, photos):
    info = channels_last.info("act")
    assert info.layout is Layout.CHANNELS_LAST and info.shape == (16, 8, 6)
    proc = FrameProcessor(channels_last)
    req = ViewRequest(layer="act", unit=Unit("act", 3), norm="channel")
    result = proc.process(frame(photos), req)
    raw = captured(channels_last, photos["chelsea"], "act").numpy()  # H x W x C
    layout = result.grid.layout
    assert (layout.channels, layout.tile_h, layout.tile_w) == (6, 16, 8)  # not 16 "channels" of 8x6
    assert_tiles(result.grid, raw.transpose(2, 0, 1), norm="channel")
    chan = raw[:, :, 3]
    assert result.unit_value == pytest.approx(float(chan.max()), rel=1e-4)
    assert result.unit_position == divmod(int(chan.argmax()), 8)
    assert np.abs(result.unit_map.astype(int) - upscale_map(torch.from_numpy(chan), SIZE).astype(int)).max() <= 1
    assert result.prefix is None
    # a position given in the request is the layer grid's (y, x), and kept
    pinned = proc.process(frame(photos), ViewRequest(layer="act", unit=Unit("act", 3, 15, 7)))
    assert pinned.unit_position == (15, 7)


def test_token_layer_draws_its_patch_grid_and_keeps_the_class_token_apart(tokens, photos):
    info = tokens.info("act")
    assert info.layout is Layout.TOKENS and info.prefix_tokens == 1 and info.grid == (8, 4)
    proc = FrameProcessor(tokens)
    result = proc.process(frame(photos, "coffee"), ViewRequest(layer="act", unit=Unit("act", 5), norm="layer"))
    raw = captured(tokens, photos["coffee"], "act").numpy()  # 33 tokens x 8 features
    maps = raw[1:].T.reshape(8, 8, 4)  # feature c: patch tokens in row-major order on the 8x4 grid
    layout = result.grid.layout
    assert layout.channels == 8 and (layout.tile_h, layout.tile_w) == (8, 4)  # not 33 tiles of 1x8
    assert_tiles(result.grid, maps, norm="layer")
    # the class token is in `prefix`, not in any tile (it exceeds every patch token in some features here)
    assert result.prefix.shape == (1, 8) and np.allclose(result.prefix[0], raw[0], atol=1e-5)
    patch_max = maps.reshape(8, -1).max(axis=1)
    assert (raw[0] > patch_max + 0.1).any()
    assert np.allclose(result.grid.channel_max, patch_max, atol=1e-5)
    chan = maps[5]
    assert result.unit_value == pytest.approx(float(chan.max()), rel=1e-4)
    assert result.unit_position == divmod(int(chan.argmax()), 4)
    assert result.unit_map.shape == (SIZE, SIZE)
    assert np.abs(result.unit_map.astype(int) - upscale_map(torch.from_numpy(chan), SIZE).astype(int)).max() <= 1


def test_vector_layer_and_units_as_before(tokens, photos):
    result = FrameProcessor(tokens).process(frame(photos), ViewRequest(layer="head", unit=Unit("head", 2)))
    logits = captured(tokens, photos["chelsea"], "head").numpy()
    layout = result.grid.layout
    assert layout.channels == 5 and (layout.tile_h, layout.tile_w) == (8, 8)
    assert result.unit_value == pytest.approx(float(logits[2]), rel=1e-4)
    assert result.unit_map is None and result.unit_position is None and result.prefix is None
    assert result.predictions[0][1] == f"class {int(logits.argmax())}"


def test_live_topk_in_the_layer_layout(tokens, channels_last, photos):
    """Token units see the whole image: their crops are whole frames; a channels-last unit's crop is its 3x3
    receptive field at its (y, x) on the 16x8 grid; the values are the channel maxima of the layer's own view."""
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    for vm, unit, width in ((tokens, Unit("act", 6), 4), (channels_last, Unit("act", 2), 8)):
        proc = FrameProcessor(vm)
        req = ViewRequest(layer=unit.layer, unit=unit, live_topk=True, live_topk_k=2)
        peaks = {}
        for i, name in enumerate(names):
            result = proc.process(frame(photos, name, i), req)
            raw = captured(vm, photos[name], unit.layer).numpy()
            chan = raw[1:, unit.channel].reshape(8, 4) if vm is tokens else raw[:, :, unit.channel]
            peaks[i] = (float(chan.max()), divmod(int(chan.argmax()), width))
        best = sorted(peaks, key=lambda i: -peaks[i][0])[:2]
        tiles = result.live_topk
        assert [t.frame_id for t in tiles] == best
        for t in tiles:
            assert t.value == pytest.approx(peaks[t.frame_id][0], rel=1e-4)
            assert (t.y, t.x) == peaks[t.frame_id][1]
            if vm is tokens:
                assert t.box == (0, 0, SIZE, SIZE) and np.array_equal(t.patch, t.frame)
            else:  # conv 3x3, stride (2, 4), padding 1; the Linear and GELU after it work per pixel
                assert t.box == (2 * t.y - 1, 4 * t.x - 1, 2 * t.y + 2, 4 * t.x + 2)
        assert proc.live.spatial


def test_effective_rf_of_a_channels_last_unit_sits_at_its_grid_centre(channels_last, photos):
    """The ERF's centre unit is (8, 4) of the 16x8 grid: input rows 15..17, columns 15..17, nothing else."""
    result = FrameProcessor(channels_last).process(frame(photos), ViewRequest(layer="act", unit=Unit("act", 1),
                                                                              erf=True))
    ys, xs = np.nonzero(result.erf_map)
    assert result.erf_frames == 1 and ys.size > 0
    assert set(ys) <= {15, 16, 17} and set(xs) <= {15, 16, 17}


def test_validate_request_asks_the_layer_layout(tokens, channels_last):
    validate_request(tokens, ViewRequest(layer="act", unit=Unit("act", 7, 7, 3)))
    validate_request(channels_last, ViewRequest(unit=Unit("act", 5, 15, 7)))
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.7"):
        validate_request(tokens, ViewRequest(unit=Unit("act", 8)))  # 8 features, not 33 tokens
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.5"):
        validate_request(channels_last, ViewRequest(unit=Unit("act", 6)))  # 6 channels, not 16 rows
    with pytest.raises(DeepVisError, match="outside layer"):
        validate_request(tokens, ViewRequest(unit=Unit("act", 1, 8, 0)))  # the grid is 8x4
    with pytest.raises(DeepVisError, match="has no positions"):
        validate_request(tokens, ViewRequest(unit=Unit("head", 3, 1, 1)))  # a vector: no y/x to ignore
    with pytest.raises(DeepVisError, match=r"^attribution method 'x' is unknown"):
        validate_request(tokens, ViewRequest(unit=Unit("act", 1), attribution=("x",)))


@pytest.mark.parametrize("arch, layer, tiles, side", [
    ("convnext_tiny", "features.1.0.block.4", 384, 56),  # the GELU inside the first block: channels-last
    ("vit_b_16", "encoder.layers.encoder_layer_0", 768, 14),  # 197 tokens: 14x14 patches + the class token
])
def test_torchvision_convnext_and_vit_layers(arch, layer, tiles, side, photos):
    import torchvision

    torch.manual_seed(0)
    vm = vis_model(getattr(torchvision.models, arch)(), size=224, classes=1000)
    result = FrameProcessor(vm).process(frame(photos), ViewRequest(layer=layer, unit=Unit(layer, 7)))
    layout = result.grid.layout
    assert (layout.channels, layout.tile_h, layout.tile_w) == (tiles, side, side)
    raw = captured(vm, photos["chelsea"], layer)
    info = vm.info(layer)
    maps = raw.permute(2, 0, 1) if info.layout is Layout.CHANNELS_LAST else raw[1:].T.reshape(tiles, side, side)
    assert np.allclose(result.grid.channel_max, maps.flatten(1).amax(dim=1).numpy(), rtol=1e-3, atol=1e-3)
    assert result.unit_value == pytest.approx(float(maps[7].max()), rel=1e-3, abs=1e-3)
    y, x = result.unit_position  # the peak on the layer's own grid (the copy's rounding may pick a tied twin)
    assert float(maps[7, y, x]) == pytest.approx(float(maps[7].max()), rel=1e-3, abs=1e-3)
    if arch == "vit_b_16":
        assert result.prefix.shape == (1, 768) and np.allclose(result.prefix[0], raw[0].numpy(), atol=1e-3)
    else:
        assert result.prefix is None
