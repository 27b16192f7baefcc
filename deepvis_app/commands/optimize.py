"""`deepvis optimize` (one image for a class or unit) and `deepvis optimize-layer` (every unit of a layer).

Both run on the model from --model/--weights/--device. Errors a user can cause (unknown class, unit out of
range, bad layer) are DeepVisError: one line, exit code 2. On a capped rectifier layer (ReLU6) a unit's value
before the clip is optimized, said in one `deepvis:` line on stderr; `--clipped` keeps the clipped value.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DeepVisError
from ..fileio import atomic_write_bytes, atomic_write_json, encode_png
from ..optimize import PRESETS, optimize
from ..optimize import objectives as O
from ..optimize.cache import read_png, weights_id, write_png
from ..optimize.presets import get_preset
from ..optimize.unit_images import unit_objective
from ..rectifiers import Clip, clip_of
from ..values import Unit
from .common import (
    MAX_SIDE,
    MAX_STEPS,
    add_model_args,
    bar_update,
    check_distinct,
    check_output_file,
    check_output_folder,
    int_in,
    job_bar,
    model_from_args,
    model_inputs,
    position_arg,
    print_notice,
    seed_arg,
    unit_arg,
)

MAX_SIZE = MAX_SIDE  # optimized image side: 1024^2 x batch x the net's activations is already GBs on a CPU
MAX_BATCH = 64
MAX_UNITS = 100_000  # --units indices


def register(subparsers: Any) -> None:
    """Add both subcommands: `optimize` and `optimize-layer`."""
    p = subparsers.add_parser("optimize", help="synthesize an image that maximizes a class or a unit",
                              description="Activation maximization: find an image that maximizes a class "
                                          "score or one unit. See docs/optimize.md.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="cls", metavar="NAME|INDEX", help="ImageNet class name or index")
    what.add_argument("--layer", help="layer name (see `deepvis layers`); use with --unit")
    p.add_argument("--unit", type=unit_arg, help="channel index in --layer")
    p.add_argument("--y", type=position_arg, help="spatial row of the unit (default: whole channel)")
    p.add_argument("--x", type=position_arg, help="spatial column of the unit (default: whole channel)")
    p.add_argument("--objective", choices=("logit", "prob"), default="logit",
                   help="for --class: maximize the pre-softmax logit (default) or the probability")
    p.add_argument("--negative", action="store_true", help="minimize instead: what the unit hates")
    _add_clipped(p)
    _add_common(p)
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1,
                   help="random starts optimized together; the best is saved")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    p.set_defaults(func=run)

    q = subparsers.add_parser("optimize-layer", help="optimize every unit of a layer (PNGs + sprite sheet)",
                              description="One optimized image per channel of --layer, plus sprite.png. "
                                          "Resumable; shards units over RANK/WORLD_SIZE under torchrun.")
    q.add_argument("--layer", required=True, help="layer name (see `deepvis layers`)")
    q.add_argument("--units", help="subset like 0-15 or 3,7,9 (default: all)")
    _add_clipped(q)
    _add_common(q)
    q.add_argument("--out", required=True, help="output directory: new, empty or an earlier optimize-layer's "
                                                "(resumed)")
    q.add_argument("--force", action="store_true", help="write into a --out folder that holds other files")
    q.set_defaults(func=run_layer)


def _add_clipped(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clipped", action="store_true",
                   help="on a ReLU6 / Hardtanh(0, m) layer: maximize the clipped value (it stops at the cap, where "
                        "its gradient is 0) instead of the value before the clip (the default there)")


def check_clipped(vm: Any, layer: str, clipped: bool) -> Clip | None:
    """The clip of `layer` whose pre-clip value is optimized (None: the value as it is); `--clipped` on a layer
    that clips nothing is a mistake worth a line, not a silent no-op."""
    clip = clip_of(vm.net, layer)
    if clipped and clip is None:
        raise DeepVisError(f"--clipped: layer {layer!r} clips nothing (only ReLU6 and Hardtanh(0, m) layers have a "
                           "value before the clip)")
    return None if clipped else clip


def pre_clip_notice(clip: Clip, what: str) -> str:
    return (f"optimizing the pre-clip value of {what} ({clip}): the clipped value stops at {clip.cap:g} with a zero "
            "gradient (--clipped to optimize it anyway)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="settings preset (default: default)")
    p.add_argument("--steps", type=int_in(0, MAX_STEPS), help="optimization steps (default: the preset's)")
    p.add_argument("--size", type=int_in(8, MAX_SIZE), help="image size in pixels (default: the preset's)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: 0)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)


def resolve_class(spec: str, categories: list[str]) -> int:
    """Class index from a name (case-insensitive) or an index; unknown names suggest the closest ones."""
    text = spec.strip()
    n = len(categories)
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < n:
            raise DeepVisError(f"class index {i} is out of range (valid: 0..{n - 1})")
        return i
    lower = [c.lower() for c in categories]
    if text.lower() in lower:
        return lower.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lower, n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(categories[lower.index(c)] for c in close)}?" if close else ""
    raise DeepVisError(f"unknown class {spec!r}{hint} (or give an index 0..{n - 1})")


def _check_unit(vm: Any, layer: str, unit: int | None, y: int | None, x: int | None) -> None:
    vm.info(layer)  # raises DeepVisError listing valid layers
    if unit is None:
        raise DeepVisError("--layer needs --unit C (a channel index)")
    if (y is None) != (x is None):
        raise DeepVisError("give both --y and --x, or neither")
    vm.check_unit(Unit(layer, unit, y, x))  # channels and grid from the layer's layout, at the model's input size


def check_size(vm: Any, preset: str, steps: int | None, size: int | None) -> None:
    """One forward pass at the image size about to be optimized: a size too small for the network (kernels larger
    than the padded map) is a one-line error before any work, not a traceback from deep inside the model."""
    side = get_preset(preset, steps=steps, size=size).size
    try:
        with torch.no_grad():
            vm.net(torch.zeros(1, 3, side, side, device=vm.device))
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise DeepVisError(f"--size {side} does not fit {vm.name} ({first}); try a larger --size") from None


def _classify(vm: Any, rgb: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        out = vm.net(vm.preprocess(rgb))
        out = out[0] if isinstance(out, tuple | list) else out
        return torch.softmax(out.float(), dim=1)[0].cpu()


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, (".png",))  # before the model loads: a typo costs nothing
    check_distinct(model_inputs(args), {"--out": out})
    if args.cls is not None and (args.unit is not None or args.y is not None or args.x is not None):
        raise DeepVisError("--unit/--y/--x go with --layer, not --class")
    if args.cls is not None and args.clipped:
        raise DeepVisError("--clipped goes with --layer (a class score has no clip)")
    if args.layer is not None and args.unit is None:
        raise DeepVisError("--layer needs --unit C (a channel index)")
    if (args.y is None) != (args.x is None):
        raise DeepVisError("give both --y and --x, or neither")
    vm = model_from_args(args)
    if args.cls is not None:
        if args.unit is not None or args.y is not None or args.x is not None:
            raise DeepVisError("--unit/--y/--x go with --layer, not --class")
        idx = resolve_class(args.cls, vm.categories)
        objective = O.class_prob(idx) if args.objective == "prob" else O.class_logit(idx)
        target = {"class": vm.categories[idx], "class_index": idx}
        clip = None
    else:
        _check_unit(vm, args.layer, args.unit, args.y, args.x)
        clip = check_clipped(vm, args.layer, args.clipped)
        pre_clip = False if args.clipped else None
        if args.y is None:
            objective = O.channel(args.layer, args.unit, pre_clip=pre_clip)
        else:
            objective = O.neuron(args.layer, args.unit, args.y, args.x, pre_clip=pre_clip)
            if args.size is None:  # positions were checked against the layer's map at the model's input size
                args.size = vm.input_size
        target = {"layer": args.layer, "unit": args.unit, "y": args.y, "x": args.x}
    if args.negative:
        objective = -objective
    objective = objective.bind(vm.net)
    check_size(vm, args.preset, args.steps, args.size)
    if objective.pre_clip and clip is not None:
        where = f"channel {args.unit}" if args.y is None else f"unit {args.unit} at y={args.y}, x={args.x}"
        print_notice(pre_clip_notice(clip, f"{args.layer} {where}"))
    t0 = time.perf_counter()
    total = args.steps if args.steps is not None else get_preset(args.preset).steps
    with job_bar(total, "optimize", args.quiet) as bar:
        res = optimize(vm, objective, preset=args.preset, steps=args.steps, size=args.size, seed=args.seed,
                       batch=args.batch, use_cache=not args.no_cache, yield_every=max(1, total // 50),
                       on_progress=lambda p: bar_update(bar, p.step, {"value": p.value}))
    seconds = time.perf_counter() - t0
    atomic_write_bytes(out, encode_png(res.image))
    report: dict[str, Any] = {"out": str(out), "model": vm.name, "weights": vm.weights, **target,
                              "objective": res.objective, "value_of": res.value_of, "value": res.value,
                              "pre_clip": res.pre_clip, "preset": args.preset,
                              "steps": res.settings["steps"], "size": res.settings["size"], "seed": args.seed,
                              "cached": res.cached, "seconds": round(seconds, 3)}
    if res.pre_clip:
        report["clipped_value"] = res.clipped_value
    if args.cls is not None:
        saved = read_png(out)  # classify exactly what was written
        probs = _classify(vm, saved)
        top = probs.topk(5)
        report["probability"] = float(probs[idx])
        report["top5"] = [{"class": vm.categories[int(i)], "probability": float(p)}
                          for p, i in zip(top.values, top.indices, strict=True)]
    if args.json:
        print(json.dumps(report))
    else:
        extra = f", p({report['class']})={report['probability']:.3f}" if "probability" in report else ""
        if res.pre_clip:
            extra += f"; after the clip {res.clipped_value:.4g}"
        print(f"wrote {out} ({res.value_of} = {res.value:.4g}{extra})")
    return 0


def parse_units(spec: str | None, n: int, layer: str) -> list[int]:
    """`0-15` or `3,7,9` (or None: all `n`) -> unit indices, each checked against the layer's `n` units."""
    if not spec:
        return list(range(n))
    units: list[int] = []
    for part in spec.split(","):
        a, sep, b = (t.strip() for t in part.strip().partition("-"))
        if not a.isdigit() or (sep and not b.isdigit()):
            raise DeepVisError(f"bad --units {spec!r}: use a list like 0-15 or 3,7,9")
        lo, hi = int(a), int(b) if sep else int(a)
        if hi < lo:
            raise DeepVisError(f"bad --units {spec!r}: the range {part.strip()} runs down; write it as {hi}-{lo}")
        if hi >= n:
            raise DeepVisError(f"unit {hi} is out of range for layer {layer!r} (valid: 0..{n - 1})")
        if len(units) + hi - lo + 1 > MAX_UNITS:
            raise DeepVisError(f"bad --units {spec!r}: more than {MAX_UNITS} units")
        units.extend(range(lo, hi + 1))
    return list(dict.fromkeys(units))


def is_layer_folder(folder: Path) -> bool:
    """A folder an earlier `deepvis optimize-layer` wrote (its unit records are there)."""
    return (folder / ".units").is_dir()


def _dist() -> tuple[int, int, bool]:
    """(rank, world size, whether torch.distributed is initialised); inits gloo under torchrun."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    dist = torch.distributed
    if world > 1 and dist.is_available() and not dist.is_initialized() and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
    ready = dist.is_available() and dist.is_initialized()
    if ready:
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, ready


def sprite(images: list[np.ndarray | None], pad: int = 2) -> np.ndarray:
    """Grid of equally sized tiles (missing ones grey), near-square, `pad` white pixels between."""
    first = next(im for im in images if im is not None)
    h, w = first.shape[:2]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        tile = im if im is not None and im.shape[:2] == (h, w) else np.full((h, w, 3), 128, np.uint8)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = tile
    return sheet


# ---------------------------------------------------------------- optimize-layer: resumable, verified units

def unit_png(out: Path, unit: int) -> Path:
    return out / f"unit_{unit:04d}.png"


def _record_path(out: Path, unit: int) -> Path:
    return out / ".units" / f"unit_{unit:04d}.json"


def layer_settings(vm: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Everything a unit image depends on, resolved (preset defaults filled in), to compare with a resumed run."""
    p = get_preset(args.preset, steps=args.steps, size=args.size)
    settings = {"model": f"{vm.spec.name}|{vm.spec.builder}|{weights_id(vm.weights)}", "layer": args.layer,
                "preset": args.preset, "steps": p.steps, "size": p.size, "seed": args.seed}
    if clip_of(vm.net, args.layer) is not None and not getattr(args, "clipped", False):
        settings["pre_clip"] = True  # only then: folders of other layers (or --clipped) resume as before
    return settings


def trusted_unit(out: Path, unit: int, settings: dict[str, Any]) -> np.ndarray | None:
    """A finished unit image, or None when it must be (re)done.

    A unit counts as done only with its record (written after the PNG, both atomically) naming these settings
    and the PNG's SHA-256, and a PNG that decodes at the recorded size: an empty, truncated or foreign file, or
    one made with another --size/--steps/--seed, is redone, never shown."""
    try:
        record = json.loads(_record_path(out, unit).read_text(encoding="utf-8"))
        data = unit_png(out, unit).read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("settings") != settings or record.get("unit") != unit:
        return None
    if record.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    img = read_png(unit_png(out, unit))
    size = settings["size"]
    return img if img is not None and img.shape == (size, size, 3) else None


def write_unit(out: Path, unit: int, image: np.ndarray, settings: dict[str, Any]) -> None:
    """PNG first, then its record: a kill between the two leaves a unit that is simply redone."""
    data = encode_png(image)
    atomic_write_bytes(unit_png(out, unit), data)
    _record_path(out, unit).parent.mkdir(exist_ok=True)
    atomic_write_json(_record_path(out, unit), {"unit": unit, "settings": settings,
                                                "sha256": hashlib.sha256(data).hexdigest()})


def run_layer(args: argparse.Namespace) -> int:
    out = check_output_folder(args.out, ours=is_layer_folder, force=args.force, make_parents=True)
    vm = model_from_args(args)
    units = parse_units(args.units, vm.channels(args.layer), args.layer)
    check_clipped(vm, args.layer, args.clipped)
    settings = layer_settings(vm, args)
    check_size(vm, args.preset, args.steps, args.size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _optimize_units(args, vm, out, units, settings)
    except (DeepVisError, OSError, MemoryError):
        alone = int(os.environ.get("WORLD_SIZE", "1")) == 1  # under torchrun other ranks may be writing here
        if created and alone and not any(out.glob("unit_*.png")):  # nothing to resume: leave nothing new
            shutil.rmtree(out, ignore_errors=True)
        raise


def _optimize_units(args: argparse.Namespace, vm: Any, out: Path, units: list[int], settings: dict[str, Any]) -> int:
    """`optimize-layer`'s work in a ready `out`: this rank's units not yet done, then (rank 0) the sprite sheet."""
    rank, world, dist_ready = _dist()
    if world == 1:  # temp files of a killed run (with several ranks, one of them may be writing right now)
        for tmp in [*out.glob(".unit_*.png.*.tmp"), *out.glob(".units/.unit_*.json.*.tmp")]:
            tmp.unlink(missing_ok=True)
    mine = units[rank::world]
    todo = [u for u in mine if trusted_unit(out, u, settings) is None]
    tag = f"rank {rank}/{world} " if world > 1 else ""
    clip = check_clipped(vm, args.layer, args.clipped)
    if clip is not None and todo and rank == 0:
        print_notice(pre_clip_notice(clip, f"each unit of {args.layer}"))
    with job_bar(len(todo), f"{tag}optimize-layer", args.quiet or not todo, unit="unit") as bar:
        for k, u in enumerate(todo):
            objective = unit_objective(vm, args.layer, u, pre_clip=False if args.clipped else None)
            res = optimize(vm, objective, preset=args.preset, steps=args.steps, size=args.size, seed=args.seed,
                           use_cache=not args.no_cache, yield_every=10**9)
            write_unit(out, u, res.image, settings)
            bar_update(bar, k + 1, {"unit": u})
    if dist_ready:
        torch.distributed.barrier()
    if rank == 0:
        tiles = [trusted_unit(out, u, settings) for u in units]
        missing = sum(t is None for t in tiles)
        if missing == len(tiles):
            raise DeepVisError(f"no unit images in {out} to build a sprite from")
        write_png(out / "sprite.png", sprite(tiles))
        note = f" ({missing} units not done yet, shown grey)" if missing else ""
        print(f"wrote {len(units) - missing} unit images and {out / 'sprite.png'}{note}")
    if dist_ready:
        torch.distributed.barrier()
    return 0
