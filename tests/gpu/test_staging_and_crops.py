"""The pinned buffers under load: 64 different images converted in a row (what a top-k render or scan pass 2 does)
each arrive as themselves, also from several threads at once; top-k crops of a 64-image batch equal the CPU's."""

from __future__ import annotations

import threading

import numpy as np
import torch
from gpu_common import full_float32, model, needs_cuda

pytestmark = needs_cuda


def _on_cpu(vm, rgb: np.ndarray) -> torch.Tensor:
    pre = vm.preprocess
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    return (x - pre.mean.cpu()) * pre.inv_std.cpu()


def test_64_images_in_a_row_each_arrive_as_themselves(frames):
    vm = model("efficientnet_lite0", "cuda")
    assert vm.preprocess.staging is not None  # the pinned path is the one under test
    tensors = [vm.preprocess.to_tensor(img) for img in frames]  # queued back to back, nothing waited for
    torch.cuda.current_stream().synchronize()
    for i, (t, img) in enumerate(zip(tensors, frames, strict=True)):
        assert torch.equal(t.cpu(), _on_cpu(vm, img)), f"image {i} holds other pixels"


def test_threads_sharing_the_buffers_get_their_own_images(frames):
    vm = model("efficientnet_lite0", "cuda")
    bad: list[int] = []

    def convert(offset: int) -> None:
        stream = torch.cuda.Stream()  # every thread its own stream, as the live worker and a job have
        with torch.cuda.stream(stream):
            got = [vm.preprocess.to_tensor(frames[(offset + i) % 64]) for i in range(64)]
            stream.synchronize()
        for i, t in enumerate(got):
            if not torch.equal(t.cpu(), _on_cpu(vm, frames[(offset + i) % 64])):
                bad.append(offset + i)

    threads = [threading.Thread(target=convert, args=(k * 16,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not bad


def test_topk_crops_of_a_64_image_batch_equal_the_cpu(frames):
    from deepvis_app.receptive_field import rf_box
    from deepvis_app.topk.crops import CropJob, iter_crops

    cpu, gpu = model("efficientnet_lite0", "cpu"), model("efficientnet_lite0", "cuda")
    layer = "_blocks.3._swish@1"
    info = cpu.info(layer)
    h, w = info.grid
    jobs = []
    for i, img in enumerate(frames):  # 64 entries, each on its own image: one crop batch converts all of them
        y, x = (3 * i) % h, (5 * i) % w
        jobs.append(CropJob(layer, i % info.channels, y, x, rf_box(cpu.net, layer, y, x, 224, info), img, i))
    want = {(j, k): crop for j, k, crop in iter_crops(cpu, jobs, batch=64)}
    with full_float32():
        got = {(j, k): crop for j, k, crop in iter_crops(gpu, jobs, batch=64)}
    assert got.keys() == want.keys() and len(got) == 128
    for key, crop in want.items():
        diff = np.abs(got[key].astype(int) - crop.astype(int))
        assert diff.max() <= 2, key  # the same crop up to float rounding, not another image's
