"""Layer layouts are found from the model's own modules (never guessed from a shape), and `as_maps` / `from_maps`
turn any layer into channels-first maps and back: on tiny configurations of torchvision's real ConvNeXt, ViT and
Swin classes (the same modules as the full models) and a ResNet."""

from __future__ import annotations

import torch
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from deepvis_app.layouts import as_maps, from_maps, prefix_tokens
from deepvis_app.probe import Capture, layer_table
from deepvis_app.values import Layout


def _table(net, size):
    torch.manual_seed(0)
    return {i.name: i for i in layer_table(net.eval(), torch.zeros(1, 3, size, size))}


def test_convnext_inner_layers_are_channels_last():
    net = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=5)
    t = _table(net, 32)
    gelu = t["features.1.0.block.4"]  # dwconv -> Permute -> LayerNorm -> Linear -> GELU: 8x8x32 channels-last
    assert gelu.kind == "GELU" and gelu.shape == (8, 8, 32) and gelu.layout is Layout.CHANNELS_LAST
    assert gelu.channels == 32 and gelu.grid == (8, 8)
    assert t["features.1.0.block.0"].layout is Layout.CHANNELS_FIRST  # the depthwise conv
    assert t["features.1.0.block.6"].layout is Layout.CHANNELS_FIRST  # permuted back
    assert t["features.1.0"].layout is Layout.CHANNELS_FIRST and t["features.1.0"].channels == 8
    assert t["classifier.2"].layout is Layout.VECTOR and t["classifier.2"].channels == 5


def test_vit_tokens_lie_on_the_patch_grid_after_the_class_token():
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=12)
    t = _table(net, 32)
    layer = t["encoder.layers.encoder_layer_0"]
    assert layer.shape == (17, 8) and layer.layout is Layout.TOKENS
    assert layer.prefix_tokens == 1 and layer.token_grid == (4, 4) and layer.channels == 8 and layer.spatial
    assert t["encoder.layers.encoder_layer_0.mlp.1"].channels == 12  # the MLP's GELU: 12 features per token
    x = torch.randn(2, 3, 32, 32)
    with Capture(net, [layer.name]) as cap:
        cap.run(x)
    act = cap[layer.name]
    maps = as_maps(act, layer)
    assert maps.shape == (2, 8, 4, 4)
    # a unit (c, y, x) is token 1 + y * 4 + x, feature c: the class token is never mixed in
    assert torch.equal(maps[1, 5, 2, 3], act[1, 1 + 2 * 4 + 3, 5])
    assert torch.equal(prefix_tokens(act, layer), act[:, :1])
    back = from_maps(maps, layer, act)
    assert torch.equal(back[:, 1:], act[:, 1:]) and torch.equal(back[:, 0], torch.zeros_like(act[:, 0]))


def test_swin_stages_are_channels_last_including_window_attention():
    net = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                          num_classes=3)
    t = _table(net, 32)
    for name in ("features.0", "features.1.0", "features.1.0.attn", "features.2", "features.3.0.mlp.1"):
        assert t[name].layout is Layout.CHANNELS_LAST, name
    assert t["features.1.0.attn"].shape == (8, 8, 8) and t["features.1.0.attn"].channels == 8
    assert t["permute"].layout is Layout.CHANNELS_FIRST  # torchvision's Permute back before pooling


def test_cnn_layers_and_reused_modules():
    t = _table(torchvision.models.resnet18(num_classes=4), 64)
    assert t["layer1.0.relu@0"].layout is Layout.CHANNELS_FIRST and t["layer1.0.relu@1"].channels == 64
    assert t["layer3"].grid == (4, 4) and t["fc"].layout is Layout.VECTOR
    x = torch.randn(1, 3, 64, 64)
    net = torchvision.models.resnet18(num_classes=4).eval()
    with Capture(net, ["layer3", "fc"]) as cap:
        cap.run(x)
    assert as_maps(cap["layer3"], t["layer3"]) is cap["layer3"]  # channels-first: the tensor itself, no copy
    assert as_maps(cap["fc"], t["fc"]).shape == (1, 4, 1, 1)


def test_channels_last_maps_round_trip():
    net = ConvNeXt([CNBlockConfig(8, None, 2)], num_classes=2)
    info = _table(net, 16)["features.1.0.block.3"]
    act = torch.randn(2, *info.shape)
    maps = as_maps(act, info)
    assert maps.shape == (2, info.channels, 4, 4)
    assert torch.equal(maps[1, 7, 2, 1], act[1, 2, 1, 7])
    assert torch.equal(from_maps(maps, info, act), act)
