"""Codes: one vector per image (by default the input of the classifier, i.e. the pooled penultimate features).

The code is what the network's last layer reads to decide the class, so images with near codes are "the same
thing" to the network. Any other layer can be asked for; spatial activations are global-average pooled (what
the nets themselves do before their classifier).

Extraction reuses the top-k scan's data path (`topk.scan`: image listing, decoding workers that never raise,
torchrun init and strided sharding): image i goes to rank i % world. Each rank writes its finished batches as
small npz parts (atomically, `fileio`) into `OUT/.codes-parts/`; a killed run resumes from them (batches
stay aligned, so the result equals an uninterrupted run) and rank 0 merges them into `OUT/codes.npz`.
`iter_codes` is the step generator (progress after every batch, abort between batches); `extract_codes`
runs it to the end with a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..abort import Abort, aborted
from ..errors import DeepVisError
from ..fileio import atomic_save_npz, atomic_write_json

CODES_FILE = "codes.npz"
PARTS_DIR = ".codes-parts"
INPUT_SUFFIX = ":input"


# ---------------------------------------------------------------- which code

def classifier_layer(vm: Any) -> str:
    """The network's last Linear (or, lacking one, its last conv: SqueezeNet's 1x1 classifier) in forward order;
    its input is the default code."""
    modules = dict(vm.net.named_modules())
    order = [i.name.partition("@")[0] for i in vm.layer_info]
    for kinds in ((nn.Linear,), (nn.Conv2d,)):
        found = [n for n in order if isinstance(modules.get(n), kinds)]
        if found:
            return found[-1]
    raise DeepVisError(f"{vm.name}: found no Linear or conv classifier; choose a layer with --layer")


def resolve_code_layer(vm: Any, layer: str | None) -> str:
    """`None` -> "<classifier>:input"; "NAME:input" -> the input of module NAME; otherwise a layer name whose
    output is pooled (validated against the model's layers, one clear line if unknown)."""
    if layer in (None, "", "auto", "penultimate"):
        return classifier_layer(vm) + INPUT_SUFFIX
    layer = str(layer)
    if layer.endswith(INPUT_SUFFIX):
        name = layer[: -len(INPUT_SUFFIX)]
        if name not in dict(vm.net.named_modules()) or not name:
            from ..probe import unknown_layer_message

            raise DeepVisError(unknown_layer_message(name, vm.layers))
        return layer
    vm.info(layer)  # raises the one-line unknown-layer error
    return layer


def pool(x: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> [N,C] by global average (as the classifier head does); [N,D] unchanged."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    return x.reshape(x.shape[0], -1)


class CodeTap:
    """Capture the pooled code during forwards of `vm.net` run by the thread that entered it (also the live
    worker's own forward: no extra pass); other threads' forwards of the same net pass untouched. Reusable:
    enter it around each forward.

    >>> tap = CodeTap(vm)
    >>> with tap:
    ...     logits = vm.net(x)
    ...     code = tap.code            # Tensor[N, D] on the model's device
    """

    def __init__(self, vm: Any, layer: str | None = None) -> None:
        self.layer = resolve_code_layer(vm, layer)
        self.net = vm.net
        self._raw: torch.Tensor | None = None
        self._owner = 0
        self._handle = None
        self._tap = None
        if not self.layer.endswith(INPUT_SUFFIX):
            from ..topk.crops import Tap  # thread-aware capture of a layer's output (`name` or `name@k`)

            example = torch.zeros(1, 3, vm.input_size, vm.input_size, device=vm.device)
            self._tap = Tap(self.net, [self.layer], example, detach=True, stop=False)

    def __enter__(self) -> CodeTap:
        self._owner = threading.get_ident()
        self._raw = None
        if self._tap is not None:
            self._tap.__enter__()
            return self
        module = dict(self.net.named_modules())[self.layer[: -len(INPUT_SUFFIX)]]

        def grab(_m: nn.Module, inputs: tuple) -> None:
            if threading.get_ident() == self._owner and inputs and isinstance(inputs[0], torch.Tensor):
                self._raw = inputs[0].detach()

        self._handle = module.register_forward_pre_hook(grab)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._tap is not None:
            if self._tap.acts.get(self.layer) is not None:
                self._raw = self._tap.acts[self.layer]
            self._tap.__exit__()

    @property
    def code(self) -> torch.Tensor:
        raw = self._tap.acts.get(self.layer) if self._tap is not None else self._raw
        if raw is None:
            raw = self._raw
        if raw is None:
            raise DeepVisError(f"layer {self.layer!r} produced no output in this forward pass")
        return pool(raw).float()


@torch.no_grad()
def code_of_image(vm: Any, rgb: np.ndarray, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(code [D] float32, class probabilities [classes]) of one RGB uint8 frame: one forward pass."""
    with CodeTap(vm, layer) as tap:
        logits = vm.net(vm.preprocess(rgb))
        code = tap.code[0]
    return code.cpu().numpy(), torch.softmax(logits.float().reshape(1, -1), 1)[0].cpu().numpy()


# ---------------------------------------------------------------- result

@dataclass
class Codes:
    """Codes of a set of images, in image-list order (unreadable images are left out and listed in `bad`).

    codes float32 [N, D]; pred int64 [N] (top-1 class); prob float32 [N] (its softmax probability); thumbs uint8
    [N, t, t, 3] (the fitted network input, shrunk) or None; categories: class names of `pred`.
    """

    paths: list[str]
    codes: np.ndarray
    pred: np.ndarray
    prob: np.ndarray
    thumbs: np.ndarray | None
    layer: str
    categories: list[str]
    bad: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def label(self, i: int) -> str:
        p = int(self.pred[i])
        return self.categories[p] if 0 <= p < len(self.categories) else str(p)

    def save(self, path: str | os.PathLike) -> None:
        arrays = {"paths": np.array(self.paths, dtype=str), "codes": self.codes.astype(np.float32),
                  "pred": self.pred.astype(np.int64), "prob": self.prob.astype(np.float32),
                  "meta": np.array(json.dumps({"layer": self.layer, "bad": self.bad, "settings": self.settings,
                                               "categories": self.categories}))}
        if self.thumbs is not None:
            arrays["thumbs"] = self.thumbs
        atomic_save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codes:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(paths=[str(p) for p in z["paths"]], codes=z["codes"], pred=z["pred"], prob=z["prob"],
                           thumbs=z["thumbs"] if "thumbs" in z.files else None, layer=meta["layer"],
                           categories=list(meta.get("categories", [])), bad=dict(meta.get("bad", {})),
                           settings=dict(meta.get("settings", {})))
        except (OSError, ValueError, KeyError) as err:
            raise DeepVisError(f"{path}: not a codes file written by `deepvis embed` ({type(err).__name__})") from None


@dataclass
class CodesProgress:
    """After each batch: `done` of `total` images (this rank); the last one has `finished` and `result`
    (rank 0 only under torchrun)."""

    done: int
    total: int
    finished: bool = False
    result: Codes | None = None


# ---------------------------------------------------------------- extraction

def _image_list(data: str | os.PathLike | Sequence[str]) -> list[str]:
    from ..topk.scan import list_images

    if isinstance(data, str | os.PathLike):
        return list_images(data)
    paths = [os.path.abspath(str(p)) for p in data]
    if not paths:
        raise DeepVisError("no images given")
    return paths


def _thumbs(batch: np.ndarray, t: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(img, (t, t), interpolation=cv2.INTER_AREA) for img in batch])


def _read_parts(parts: Path) -> list[dict[str, np.ndarray]]:
    """Every finished part (temp files of a killed write are never named part-*.npz, so never read)."""
    out = []
    for p in sorted(parts.glob("part-*.npz")):
        try:
            with np.load(p, allow_pickle=False) as z:
                out.append({k: z[k] for k in z.files})
        except (OSError, ValueError) as err:
            raise DeepVisError(f"--resume: cannot read {p} ({type(err).__name__}); run without --resume") from None
    return out


def iter_codes(vm: Any, data: str | os.PathLike | Sequence[str], out: str | os.PathLike | None = None, *,
               layer: str | None = None, batch_size: int = 32, workers: int | None = None, resume: bool = False,
               thumb: int = 32, checkpoint_every: int = 4, dist: Any = None, abort: Abort = None,
               stop_after_batches: int | None = None) -> Iterator[CodesProgress]:
    """Extract codes of DATA (folder, list file, or a list of paths) with `vm`, yielding progress per batch.

    out: a directory; finished batches are kept in `out/.codes-parts` (every `checkpoint_every` batches and on
    abort) and the result is written to `out/codes.npz`. out=None keeps everything in memory (the app).
    resume: continue from the parts of an interrupted run with the same images/model/layer. abort: checked
    between batches; the generator then ends without a result (parts kept for `resume`). thumb: side of the
    stored thumbnails (0: none). stop_after_batches: raise KeyboardInterrupt after that many (tests).
    """
    from ..topk.scan import Dist, image_batches

    dist = dist or Dist()
    if batch_size < 1:
        raise DeepVisError("--batch-size must be at least 1")
    if not 0 <= thumb <= 256:
        raise DeepVisError("--thumb-size must be between 0 and 256")
    code_layer = resolve_code_layer(vm, layer)
    paths = _image_list(data)
    config = {"files": hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest(), "model": vm.name,
              "weights": str(vm.weights), "layer": code_layer, "input_size": vm.input_size,
              "crop": vm.preprocess.crop, "thumb": thumb}
    parts_dir: Path | None = None
    if out is not None:
        out = Path(out).expanduser()
        if out.exists() and not out.is_dir():
            raise DeepVisError(f"--out {out} exists and is not a directory")
        if not out.parent.is_dir():
            raise DeepVisError(f"--out {out}: the folder {out.parent} does not exist")
        parts_dir = out / PARTS_DIR
        if dist.rank == 0:
            out.mkdir(exist_ok=True)
            cfg_path = parts_dir / "config.json"
            if parts_dir.exists() and resume:
                try:
                    old = json.loads(cfg_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    old = None
                if old != config:
                    diff = [k for k in config if not isinstance(old, dict) or old.get(k) != config[k]]
                    raise DeepVisError(f"--resume: the interrupted run in {out} used a different "
                                       f"{', '.join(diff) or 'configuration'}; run without --resume")
            elif parts_dir.exists():
                if any(parts_dir.glob("part-*.npz")):
                    print(f"deepvis: discarding the interrupted extraction in {parts_dir} (use --resume to "
                          "continue it)", file=sys.stderr)
                shutil.rmtree(parts_dir)
            elif resume:
                print(f"deepvis: nothing to resume in {out}; extracting from the start", file=sys.stderr)
            parts_dir.mkdir(exist_ok=True)
            for tmp in parts_dir.glob(".*.tmp"):  # a killed write's temp file is never read, only removed
                tmp.unlink(missing_ok=True)
            atomic_write_json(cfg_path, config)
        dist.barrier()

    done = np.zeros(len(paths), dtype=bool)
    if parts_dir is not None and resume:
        for part in _read_parts(parts_dir):
            done[part["ids"]] = True
            done[part["bad_ids"]] = True
    todo = [i for i in np.flatnonzero(~done).tolist() if i % dist.world == dist.rank]
    mine_total = sum(1 for i in range(len(paths)) if i % dist.world == dist.rank)
    loader = image_batches(vm, paths, todo, batch_size=batch_size, workers=workers, dist=dist)
    mean, inv_std = vm.preprocess.mean, vm.preprocess.inv_std
    mem: list[dict[str, np.ndarray]] = []      # in-memory result (out=None) or the unflushed batches
    buffered: list[dict[str, np.ndarray]] = []
    ndone = mine_total - len(todo)
    started = time.perf_counter()

    def flush() -> None:
        if parts_dir is None or not buffered:
            return
        merged = _concat(buffered)
        first = int(min(np.concatenate([merged["ids"], merged["bad_ids"]])))
        atomic_save_npz(parts_dir / f"part-r{dist.rank}-{first:09d}.npz", **merged)
        buffered.clear()
        from ..topk.store import _kill_point

        _kill_point("embed-codes")

    yield CodesProgress(ndone, mine_total)
    batches = 0
    tap = CodeTap(vm, code_layer)
    for ids, images, bad_items in loader:
        if aborted(abort):
            flush()
            return
        rec: dict[str, Any] = {"bad_ids": np.array([i for i, _ in bad_items], dtype=np.int64),
                               "bad_errs": [e for _, e in bad_items]}
        if len(ids):
            # The loader's NHWC batch becomes a channels-last NCHW view, no copy (benchmarks/embed.py: on this CPU
            # channels-last ran the default net 0.92x-1.66x as fast as contiguous NCHW between runs).
            # Hooks and no_grad only around the forward, never across a yield: the consumer's thread keeps its
            # grad mode, and other forwards of the net between batches (the live worker) are not tapped.
            with torch.no_grad(), tap:
                x = images.to(vm.device, non_blocking=True).permute(0, 3, 1, 2).float()
                logits = vm.net((x - mean) * inv_std)
                prob, pred = torch.softmax(logits.float().reshape(len(ids), -1), 1).max(1)
                code = tap.code
            rec.update(ids=ids.numpy(), codes=code.cpu().numpy(), pred=pred.cpu().numpy(),
                       prob=prob.cpu().numpy())
            if thumb:
                rec["thumbs"] = _thumbs(images.numpy(), thumb)
        else:
            rec["ids"] = np.zeros(0, np.int64)  # a batch of unreadable files only: no code arrays
        (buffered if parts_dir is not None else mem).append(rec)
        batches += 1
        ndone += len(ids) + len(bad_items)
        if batches % checkpoint_every == 0:
            flush()
        if stop_after_batches is not None and batches >= stop_after_batches:
            flush()
            raise KeyboardInterrupt
        yield CodesProgress(ndone, mine_total)
    flush()
    seconds = time.perf_counter() - started
    dist.barrier()
    if dist.rank != 0:
        yield CodesProgress(ndone, mine_total, finished=True)
        return
    records = _read_parts(parts_dir) if parts_dir is not None else mem
    result = _assemble(vm, paths, records, code_layer, config, thumb, seconds, dist.world)
    if out is not None:
        result.save(out / CODES_FILE)
        shutil.rmtree(parts_dir, ignore_errors=True)
    yield CodesProgress(ndone, mine_total, finished=True, result=result)


def _concat(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Batches (or parts) -> one record; code arrays only from those that have codes."""
    out: dict[str, np.ndarray] = {
        "ids": np.concatenate([np.zeros(0, np.int64), *(r["ids"] for r in records)]),
        "bad_ids": np.concatenate([np.zeros(0, np.int64), *(r["bad_ids"] for r in records)]),
        "bad_errs": np.array([str(e) for r in records for e in r["bad_errs"]], dtype=str)}
    with_codes = [r for r in records if "codes" in r]
    if with_codes:
        for k in with_codes[0]:
            if k not in out:
                out[k] = np.concatenate([r[k] for r in with_codes])
    return out


def _assemble(vm: Any, paths: list[str], records: list[dict[str, np.ndarray]], layer: str, config: dict[str, Any],
              thumb: int, seconds: float, world: int) -> Codes:
    """Order every part's rows by image index; every image must be in exactly one part (ok or bad)."""
    merged = _concat(records)
    ids, bad_ids, bad_errs = merged["ids"], merged["bad_ids"], [str(e) for e in merged["bad_errs"]]
    seen = np.zeros(len(paths), dtype=np.int64)
    np.add.at(seen, ids, 1)
    np.add.at(seen, bad_ids, 1)
    if (seen != 1).any():
        missing = int((seen == 0).sum())
        raise DeepVisError(f"{missing} images have no code after the run (under torchrun, --out must be on a "
                           "file system all ranks share)")
    if len(ids) == 0:
        raise DeepVisError("no image could be read, so there are no codes")
    order = np.argsort(ids, kind="stable")
    cat = {k: merged[k][order] for k in ("codes", "pred", "prob", *(("thumbs",) if thumb else ()))}
    settings = {**config, "seconds": round(seconds, 3), "world_size": world, "pooling": "global average"}
    settings.pop("files", None)
    return Codes(paths=[paths[i] for i in ids[order]], codes=cat["codes"].astype(np.float32), pred=cat["pred"],
                 prob=cat["prob"], thumbs=cat.get("thumbs"), layer=layer, categories=list(vm.categories),
                 bad={paths[int(i)]: e for i, e in zip(bad_ids, bad_errs, strict=True)}, settings=settings)


def extract_codes(vm: Any, data: str | os.PathLike | Sequence[str], out: str | os.PathLike | None = None, *,
                  progress: bool = True, **kw: Any) -> Codes | None:
    """`iter_codes` to the end with a tqdm bar on stderr (rank 0); returns the Codes (None on other ranks)."""
    from ..topk.scan import Dist, Progress

    dist = kw.get("dist") or Dist()
    bar = None
    result = None
    for p in iter_codes(vm, data, out, **kw):
        if bar is None:
            bar = Progress(p.total, "codes", enabled=progress and dist.rank == 0)
            bar.update(p.done)
            seen = p.done
        else:
            bar.update(p.done - seen)
            seen = p.done
        if p.finished:
            result = p.result
    if bar is not None:
        bar.close()
    return result
