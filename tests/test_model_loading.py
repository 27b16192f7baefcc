"""Every model a user has (issue 25, Loading): the curated modern families, any torchvision classifier and any timm
model by name with their own preprocessing, and a user's own fine-tuned checkpoints (a rebuilt head, their class
names, TorchScript and safetensors), every mistake one line. Random weights only: nothing is downloaded."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision

from deepvis_app import DeepVisError, load_model
from deepvis_app.values import Layout
from deepvis_app.zoo import Preprocessor, fit_frame, resolve_spec, timm_spec, torchvision_spec

# name -> (a curated layer, its layout, channels, grid, prefix tokens): each family's most telling layer
FAMILIES = {
    "convnext_tiny": ("features.1.0.block.4", Layout.CHANNELS_LAST, 384, (56, 56), 0),
    "resnet50": ("layer3.5.relu@1", Layout.CHANNELS_FIRST, 256, (14, 14), 0),
    "regnet_y_400mf": ("trunk_output.block3.block3-2.f.b", Layout.CHANNELS_FIRST, 208, (14, 14), 0),
    "efficientnet_b0": ("features.3.1.block.1", Layout.CHANNELS_FIRST, 240, (28, 28), 0),
    "efficientnet_v2_s": ("features.4.1.block.1", Layout.CHANNELS_FIRST, 512, (24, 24), 0),
    "vit_b_16": ("encoder.layers.encoder_layer_5.mlp.1", Layout.TOKENS, 3072, (14, 14), 1),
    "deit_tiny": ("blocks.5.mlp.act", Layout.TOKENS, 768, (14, 14), 1),
    "swin_t": ("features.1.1.mlp.1", Layout.CHANNELS_LAST, 384, (56, 56), 0),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_curated_family_builds_and_its_curated_layers_exist(name):
    if name == "deit_tiny":
        pytest.importorskip("timm")
    vm = load_model(name, weights="random", device="cpu")  # one probing forward, at the spec's input size
    for ls in vm.spec.layers:
        vm.info(ls.name)  # raises on a curated layer the network does not have
    assert vm.default_layer in {ls.name for ls in vm.shown_layers}
    layer, layout, channels, grid, prefix = FAMILIES[name]
    info = vm.info(layer)
    assert (info.layout, info.channels, info.grid, info.prefix_tokens) == (layout, channels, grid, prefix)
    assert vm.num_classes == 1000 and vm.is_class_layer(vm.spec.layers[-1].name) and vm.class_layer
    assert vm.title.endswith("(random weights)")
    # the curated preprocessing is the library's own eval recipe for these weights
    library, _, arch = vm.spec.builder.partition(":")
    own = torchvision_spec(arch) if library == "torchvision" else timm_spec(arch)
    assert (vm.spec.input_size, vm.spec.interpolation, vm.spec.mean, vm.spec.std) == \
        (own.input_size, own.interpolation, own.mean, own.std)
    assert vm.spec.crop_pct == pytest.approx(own.crop_pct, abs=1e-4)


def test_torchvision_classifier_by_name_needs_no_spec_file():
    vm = load_model("torchvision:mobilenet_v3_small", weights="random", device="cpu")
    meta = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    assert vm.name == "torchvision:mobilenet_v3_small" and vm.spec.path is None
    assert vm.categories == list(meta.meta["categories"])
    # resize 256, crop 224, bilinear: torchvision's eval transform for these weights
    assert (vm.input_size, vm.spec.crop_pct, vm.spec.interpolation) == (224, 224 / 256, "bilinear")
    x = vm.preprocess(np.zeros((120, 160, 3), np.uint8))
    assert x.shape == (1, 3, 224, 224) and vm.is_class_layer("classifier.3")
    assert load_model("torchvision:resnet18", weights="random", device="cpu").spec.name == "resnet18"  # curated


@pytest.mark.parametrize("name, message", [
    ("torchvision:resnet181", "torchvision has no image classifier 'resnet181' (close: resnet18"),
    ("torchvision:fasterrcnn_resnet50_fpn", "torchvision has no image classifier"),  # a detector is no classifier
    ("torchvision:", "give a model name after 'torchvision:'"),
])
def test_unknown_library_models_are_one_line(name, message):
    with pytest.raises(DeepVisError) as err:
        load_model(name, weights="random", device="cpu")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_timm_model_by_name_takes_its_pretrained_config():
    timm = pytest.importorskip("timm")
    vm = load_model("timm:test_vit", weights="random", device="cpu")
    cfg = timm.create_model("test_vit").pretrained_cfg
    assert (vm.input_size, vm.spec.crop_pct, vm.spec.interpolation) == (160, cfg["crop_pct"], cfg["interpolation"])
    assert vm.spec.mean == tuple(cfg["mean"]) == (0.5, 0.5, 0.5)
    x = vm.preprocess(np.full((90, 120, 3), 255, np.uint8))
    assert x.shape == (1, 3, 160, 160) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5
    assert vm.num_classes == 1000 and vm.info("blocks.0").layout is Layout.TOKENS
    with pytest.raises(DeepVisError, match=r"timm has no model 'test_vitt' \(close: test_vit"):
        load_model("timm:test_vitt", weights="random", device="cpu")


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    for name in ("timm:deit_tiny_patch16_224", "deit_tiny"):
        with pytest.raises(DeepVisError) as err:
            load_model(name, weights="random", device="cpu")
        assert str(err.value) == "timm is not installed: pip install 'deepvis[models]' (or: pip install timm " \
                                 "safetensors)"


def test_default_weights_offline_are_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DeepVisError) as err:
        load_model("torchvision:resnet34", device="cpu")
    assert "resnet34-b627a593.pth" in str(err.value) and "\n" not in str(err.value)
    if _installed("timm"):
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
        with pytest.raises(DeepVisError) as err:
            load_model("deit_tiny", device="cpu")
        assert str(err.value) == ("weights for timm:deit_tiny_patch16_224 are not cached (they come from "
                                  "timm/deit_tiny_patch16_224.fb_in1k): run once online, or load random weights or "
                                  "a weights file")


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---- preprocessing: crop percentage and interpolation ------------------------------------------------------------


def test_crop_pct_keeps_the_centre_share_of_the_square():
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:150, 100:200] = 255  # the centre 100x100 of the 200x200 centre square
    for interpolation in ("area", "bilinear", "bicubic", "nearest"):
        fitted = fit_frame(img, 64, "center", 0.5, interpolation)  # exactly the white square (edges: the filter)
        assert fitted.shape == (64, 64, 3) and fitted[4:-4, 4:-4].min() == 255, interpolation
        wider = fit_frame(img, 64, "center", 0.75, interpolation)  # 150 px seen: white spans 10.7..53.3
        assert wider[:8, :8].max() == 0 and wider[56:, 56:].max() == 0 and wider[14:50, 14:50].min() == 255
    assert np.array_equal(fit_frame(img, 64), fit_frame(img, 64, "center", 1.0, "area"))


def test_preprocess_matches_the_librarys_own_eval_transform(photos):
    """The frame as torchvision's eval transform (resize the short side to 232, crop 224, bicubic, antialiased)
    would feed it: the crop share and the interpolation are honoured, not only the size."""
    rgb = photos["astronaut"][:, 64:]  # 512 x 448: not square
    spec = resolve_spec("swin_t")  # the curated spec: no network needed to fit frames
    ours = Preprocessor(spec, torch.device("cpu"))(rgb)
    theirs = torchvision.models.Swin_T_Weights.DEFAULT.transforms()(torch.from_numpy(rgb).permute(2, 0, 1))
    diff = (ours[0] - theirs).abs()
    # one grey level of 255 is 0.017 after the std: the same pixels, up to rounding in bicubic's float path
    assert diff.mean() < 0.005 and diff.max() < 0.1
    plain = Preprocessor(replace(spec, crop_pct=1.0, interpolation="area"), torch.device("cpu"))
    assert (plain(rgb)[0] - theirs).abs().mean() > 5 * diff.mean()


def test_timm_preprocess_matches_timms_transform(photos):
    timm = pytest.importorskip("timm")
    from PIL import Image

    vm = load_model("timm:test_vit", weights="random", device="cpu")
    net = timm.create_model("test_vit")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))
    rgb = photos["chelsea"]
    theirs = transform(Image.fromarray(rgb))
    diff = (vm.preprocess(rgb)[0] - theirs).abs()
    assert diff.mean() < 0.002 and diff.max() < 0.01  # PIL's bicubic vs torch's: within one grey level


# ---- a user's own checkpoints --------------------------------------------------------------------------------------

NAMES = ["cat", "dog", "bird", "fish", "frog"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A torchvision ResNet-18 fine-tuned for 5 classes by a tiny training loop, saved as training loops do."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()
    for _ in range(3):
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    folder = tmp_path_factory.mktemp("ck")
    torch.save({"model": net.state_dict(), "epoch": 1, "optimizer": opt.state_dict()}, folder / "ck.pt")
    (folder / "names.txt").write_text("\n".join(NAMES) + "\n")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = net(x)
    return net, folder, x, logits


def test_a_fine_tuned_checkpoint_loads_with_its_labels_and_predicts_them(trained):
    net, folder, x, logits = trained
    notes: list[str] = []
    vm = load_model("resnet18", weights=str(folder / "ck.pt"), labels=str(folder / "names.txt"), device="cpu",
                    on_notice=notes.append)
    assert vm.categories == NAMES and vm.num_classes == 5 and vm.class_layer == "fc"
    assert notes == [f"ck.pt: classifier head fc rebuilt for its 5 classes (the architecture has 1000); class names "
                     f"from {folder / 'names.txt'}"]
    with torch.no_grad():
        out = vm.net(x)
    assert out.shape == (2, 5) and torch.equal(out, logits)
    predicted = [vm.categories[i] for i in out.argmax(1).tolist()]
    assert predicted == [NAMES[i] for i in logits.argmax(1).tolist()] and set(predicted) <= set(NAMES)
    assert vm.title == "ResNet-18 (ck.pt)"
    twin = vm.reload(weights="random")  # the window's "random weights" twin keeps the head and the names
    assert twin.categories == NAMES and twin.net.fc.out_features == 5 and not torch.equal(twin.net.fc.weight,
                                                                                          vm.net.fc.weight)


def test_torchscript_and_safetensors_round_trips_predict_identically(trained, tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file

    net, folder, x, logits = trained
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, yet users still have TorchScript files
        torch.jit.save(torch.jit.trace(net, x[:1]), tmp_path / "traced.pt")
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"), metadata={"labels": '["a", "b", "c", "d", "e"]'})
    (tmp_path / "traced.labels.txt").write_text("\n".join(NAMES))
    for name, names in (("traced.pt", NAMES), ("w.safetensors", list("abcde"))):
        vm = load_model("resnet18", weights=str(tmp_path / name), device="cpu")
        with torch.no_grad():
            assert torch.equal(vm.net(x), logits), name
        assert vm.categories == names, name
        assert vm.info("layer2").channels == 128  # the spec's architecture: every layer can be probed


@pytest.mark.parametrize("wrap", ["state_dict", "ddp", "compiled", "lightning", "plain", "unlabelled"])
def test_checkpoints_as_training_loops_save_them(trained, tmp_path, wrap):
    net, _, x, logits = trained
    sd = net.state_dict()
    saved = {
        "state_dict": {"state_dict": sd, "classes": NAMES, "best_acc": np.float64(0.5)},
        "ddp": {"model": {f"module.{k}": v for k, v in sd.items()},
                "class_to_idx": {n: i for i, n in enumerate(NAMES)}},
        "compiled": {"model_state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "labels": NAMES},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "labels": NAMES},
        "plain": sd,
        "unlabelled": {"model": sd, "epoch": 1},
    }[wrap]
    torch.save(saved, tmp_path / "ck.pth")
    if wrap == "plain":
        (tmp_path / "ck.labels.txt").write_text("\n".join(NAMES))
    notes: list[str] = []
    vm = load_model("resnet18", weights=str(tmp_path / "ck.pth"), device="cpu", on_notice=notes.append)
    with torch.no_grad():
        assert torch.equal(vm.net(x), logits)
    if wrap == "unlabelled":  # no names anywhere: numbered, and the one notice line says how to give them
        assert vm.categories == [f"class {i}" for i in range(5)]
        assert notes == ["ck.pth: classifier head fc rebuilt for its 5 classes (the architecture has 1000); class "
                         "names not found: numbered 'class 0'.. (give a labels file, one name per line, or put "
                         "ck.labels.txt beside the weights)"]
    else:
        assert vm.categories == NAMES and len(notes) == 1


def test_a_timm_checkpoint_gets_its_head_through_reset_classifier(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_patch16_224", num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "deit3.pt")
    notes: list[str] = []
    vm = load_model("deit_tiny", weights=str(tmp_path / "deit3.pt"), labels=["a", "b", "c"], device="cpu",
                    on_notice=notes.append)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(vm.net(x), net(x))
    assert vm.class_layer == "head" and vm.categories == ["a", "b", "c"]
    assert notes and "classifier head head rebuilt for its 3 classes (the architecture has 1000)" in notes[0]


@pytest.mark.parametrize("model, expected", [
    # another depth of the same family: keys missing, named and counted
    ("torchvision:resnet34", "does not fit torchvision:resnet34: 80 of the model's 218 tensors missing from the file "
                             "(layer1.2.conv1.weight, layer1.2.bn1.weight, layer1.2.bn1.bias, ...) - a checkpoint of "
                             "another architecture?"),
    ("torchvision:resnet50", "does not fit resnet50: 25 tensors of another shape (layer1.0.conv1.weight"),
    ("vgg16", "no parameter name matches this model (e.g. 'conv1.weight'; vgg16 has e.g. 'features.0.weight')"),
])
def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_mismatch(trained, model, expected):
    _, folder, _, _ = trained
    with pytest.raises(DeepVisError) as err:
        load_model(model, weights=str(folder / "ck.pt"), device="cpu")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_label_count_must_match_the_head(trained, tmp_path):
    _, folder, _, _ = trained
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(DeepVisError, match=r"four.txt has 4 class names, the model's classifier head has 5 classes"):
        load_model("resnet18", weights=str(folder / "ck.pt"), labels=str(tmp_path / "four.txt"), device="cpu")
    with pytest.raises(DeepVisError, match="has 4 class names, the model's classifier head has 1000 classes"):
        load_model("resnet18", weights="random", labels=str(tmp_path / "four.txt"), device="cpu")
    with pytest.raises(DeepVisError, match="labels: file not found"):
        load_model("resnet18", weights="random", labels=str(tmp_path / "nope.txt"), device="cpu")


def test_random_weights_with_a_class_count(tmp_path):
    vm = load_model("resnet18", weights="random", num_classes=5, labels=NAMES, device="cpu", seed=4)
    assert vm.net.fc.out_features == 5 and vm.categories == NAMES and vm.class_layer == "fc"
    again = load_model("resnet18", weights="random", num_classes=5, labels=NAMES, device="cpu", seed=4)
    assert torch.equal(vm.net.fc.weight, again.net.fc.weight)  # seeded, head included
    with pytest.raises(DeepVisError, match="num_classes needs random weights or a weights file"):
        load_model("resnet18", num_classes=5, device="cpu")


def test_no_pickled_code_runs_from_any_checkpoint_kind(trained, tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('pwned')",))

    net, *_ = trained
    torch.save({"model": net.state_dict(), "epoch": 1, "hook": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DeepVisError) as err:
        load_model("resnet18", weights=str(tmp_path / "evil.pt"), device="cpu")
    assert "never unpickles" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_bad_weight_files_of_the_new_kinds(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    expected = "not a safetensors file DeepVis can read" if _installed("safetensors") else \
        "reading .safetensors needs the safetensors package: pip install 'deepvis\\[models\\]'"
    with pytest.raises(DeepVisError, match=expected):
        load_model("resnet18", weights=str(tmp_path / "bad.safetensors"), device="cpu")
    torch.save({"epoch": 3, "note": "no weights here"}, tmp_path / "empty.pt")
    with pytest.raises(DeepVisError, match="no tensors found .* its keys: epoch, note"):
        load_model("resnet18", weights=str(tmp_path / "empty.pt"), device="cpu")
    with pytest.raises(DeepVisError, match="weights file is a folder"):
        load_model("resnet18", weights=str(tmp_path), device="cpu")


def test_resolve_spec_names_the_library_spec():
    spec = resolve_spec("torchvision:regnet_x_400mf")
    assert spec.builder == "torchvision:regnet_x_400mf" and spec.crop_pct == pytest.approx(224 / 232)
    assert resolve_spec("torchvision:convnext_tiny").name == "convnext_tiny"  # the curated spec of that builder
