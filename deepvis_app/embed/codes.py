"""Codes: one vector per image (by default the input of the classifier, i.e. the pooled penultimate features).

The code is what the network's last layer reads to decide the class, so images with near codes are "the same
thing" to the network. Any other layer can be asked for; spatial activations are global-average pooled (what
the nets themselves do before their classifier).

Extraction reuses the top-k scan's data path (`topk.scan`: image listing, decoding workers that never raise,
torchrun init and strided sharding): image i goes to rank i % world. Each rank writes its finished batches as
small npz parts (atomically, `fileio`) into `OUT/.codes-parts/`; a killed run resumes from them (batches
stay aligned, so the result equals an uninterrupted run) and rank 0 merges them into `OUT/codes.npz`.
`iter_codes` is the step generator (progress after every batch, abort between batches); `extract_codes`
runs it to the end with a progress bar. A folder an embedding is written to never feeds a later run (its own
pictures would be embedded), and `Codes.load` checks every array of a codes file before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..abort import Abort, aborted
from ..errors import DeepVisError, ParamError
from ..fileio import atomic_save_npz, atomic_write_json

CODES_FILE = "codes.npz"
PARTS_DIR = ".codes-parts"
INPUT_SUFFIX = ":input"
REPORT_FILE = "embedding.json"
MAX_THUMB = 256
Notice = Callable[[str], None] | None  # where a run's notices go (the CLI prints them; None drops them)


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
    raise ParamError("layer", f"is needed: {vm.name} has no Linear or conv classifier whose input would be the "
                              "default code")


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
            from ..probe import Capture  # thread-aware capture of a layer's output (`name` or `name@k`)

            example = torch.zeros(1, 3, vm.input_size, vm.input_size, device=vm.device)
            self._tap = Capture(self.net, [self.layer], example=example, detach=True)

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
            if self._tap.activations.get(self.layer) is not None:
                self._raw = self._tap.activations[self.layer]
            self._tap.__exit__()

    @property
    def code(self) -> torch.Tensor:
        raw = self._tap.activations.get(self.layer) if self._tap is not None else self._raw
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

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of a codes file (`save`, `to_bytes`)."""
        arrays = {"paths": np.array(self.paths, dtype=str), "codes": self.codes.astype(np.float32),
                  "pred": self.pred.astype(np.int64), "prob": self.prob.astype(np.float32),
                  "meta": np.array(json.dumps({"layer": self.layer, "bad": self.bad, "settings": self.settings,
                                               "categories": self.categories}))}
        if self.thumbs is not None:
            arrays["thumbs"] = self.thumbs
        return arrays

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, **self.arrays())
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        atomic_save_npz(path, **self.arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codes:
        """A codes file written by `deepvis embed`; anything else (damaged, truncated, crafted: wrong dtypes or
        shapes, NaN, rows that disagree, classes out of range) is one `DeepVisError` line, never a traceback
        from later code. Never unpickles."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DeepVisError(f"codes file not found: {path}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise DeepVisError(f"{path}: not a codes file written by `deepvis embed` ({type(err).__name__})") from None
        return cls(**_checked(path, arrays))


def _checked(path: str | os.PathLike, z: dict[str, np.ndarray]) -> dict[str, Any]:
    """The fields of a `Codes` from a codes file's arrays, each checked (see `Codes.load`)."""

    def bad(what: str) -> DeepVisError:
        return DeepVisError(f"{path}: not a usable codes file: {what}")

    missing = [k for k in ("paths", "codes", "pred", "prob", "meta") if k not in z]
    if missing:
        raise bad(f"no {', '.join(missing)} array")
    try:
        meta = json.loads(str(z["meta"]))
    except ValueError:
        raise bad("its meta data is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("layer"), str):
        raise bad("its meta data names no layer")
    categories, bad_files, settings = meta.get("categories", []), meta.get("bad", {}), meta.get("settings", {})
    if not (isinstance(categories, list) and all(isinstance(c, str) for c in categories)):
        raise bad("its class names are not a list of texts")
    if not (isinstance(bad_files, dict) and all(isinstance(v, str) for v in bad_files.values())):
        raise bad("its list of unreadable images is damaged")
    if not isinstance(settings, dict):
        raise bad("its settings are damaged")
    paths, codes, pred, prob = z["paths"], z["codes"], z["pred"], z["prob"]
    if paths.ndim != 1 or paths.dtype.kind != "U":
        raise bad(f"paths must be a list of texts, got {paths.dtype} {paths.shape}")
    n = len(paths)
    if n == 0:
        raise bad("it holds no images")
    if codes.dtype.kind not in "fiu" or codes.ndim != 2 or codes.shape[0] != n or codes.shape[1] < 1:
        raise bad(f"codes must be real numbers [{n} images, D], got {codes.dtype} {codes.shape}")
    codes = codes.astype(np.float32)
    if not np.isfinite(codes).all():
        raise bad("the codes contain NaN or infinity")
    if pred.dtype.kind not in "iu" or pred.shape != (n,):
        raise bad(f"pred must be {n} class indices, got {pred.dtype} {pred.shape}")
    limit = len(categories) if categories else np.iinfo(np.int64).max
    if n and (int(pred.min()) < 0 or int(pred.max()) >= limit):
        raise bad(f"a class index is out of range (valid: 0..{limit - 1})")
    if prob.dtype.kind != "f" or prob.shape != (n,) or not (np.isfinite(prob).all() and (prob >= 0).all()
                                                            and (prob <= 1).all()):
        raise bad(f"prob must be {n} probabilities in [0, 1], got {prob.dtype} {prob.shape}")
    thumbs = z.get("thumbs")
    if thumbs is not None and (thumbs.dtype != np.uint8 or thumbs.ndim != 4 or thumbs.shape[0] != n
                               or thumbs.shape[3] != 3 or thumbs.shape[1] != thumbs.shape[2]
                               or not 1 <= thumbs.shape[1] <= MAX_THUMB):
        raise bad(f"thumbs must be {n} square RGB uint8 pictures of 1..{MAX_THUMB} px, got {thumbs.dtype} "
                  f"{thumbs.shape}")
    return {"paths": [str(p) for p in paths], "codes": codes, "pred": pred.astype(np.int64),
            "prob": prob.astype(np.float32), "thumbs": thumbs, "layer": meta["layer"], "categories": categories,
            "bad": {str(k): v for k, v in bad_files.items()}, "settings": settings}


@dataclass
class CodesProgress:
    """After each batch: `done` of `total` images (this rank); the last one has `finished` and `result`
    (rank 0 only under torchrun)."""

    done: int
    total: int
    finished: bool = False
    result: Codes | None = None


# ---------------------------------------------------------------- extraction

def is_embed_folder(folder: str | os.PathLike) -> bool:
    """A folder `deepvis embed` wrote (finished or interrupted): its report, codes or parts are there."""
    p = Path(folder)
    return (p / REPORT_FILE).is_file() or (p / CODES_FILE).is_file() or (p / PARTS_DIR).is_dir()


def image_list(data: str | os.PathLike | Sequence[str], out: Path | None = None) -> list[str]:
    """The images of DATA, leaving out `out` and every other embedding folder below a DATA folder (an output
    inside the data must not feed the next run: `deepvis embed photos --out photos/map`)."""
    from ..topk.images import list_images

    if not isinstance(data, str | os.PathLike):
        paths = [os.path.abspath(str(p)) for p in data]
        if not paths:
            raise DeepVisError("no images given")
        return paths
    paths = list_images(data)
    root = Path(data).expanduser()
    if not root.is_dir():
        return paths
    top = os.path.realpath(root)
    skip = os.path.realpath(out) if out is not None else None
    if skip == top:
        raise ParamError("out", f"{out} is the data folder: the run's own pictures would be embedded by the next "
                                "one; choose a folder beside or below it")
    verdicts: dict[str, bool] = {}

    def excluded(path: str) -> bool:
        folder = os.path.dirname(os.path.realpath(path))
        while folder.startswith(top + os.sep):
            if folder not in verdicts:
                verdicts[folder] = folder == skip or is_embed_folder(folder)
            if verdicts[folder]:
                return True
            folder = os.path.dirname(folder)
        return False

    kept = [p for p in paths if not excluded(p)]
    if not kept:
        raise DeepVisError(f"no images found under {top} outside embedding output folders")
    return kept


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
            raise ParamError("resume", f"cannot read {p} ({type(err).__name__}); start again without it") from None
    return out


def iter_codes(vm: Any, data: str | os.PathLike | Sequence[str], out: str | os.PathLike | None = None, *,
               layer: str | None = None, batch_size: int = 32, workers: int | None = None, resume: bool = False,
               thumb: int = 32, checkpoint_every: int = 4, dist: Any = None, abort: Abort = None,
               stop_after_batches: int | None = None, on_notice: Notice = None) -> Iterator[CodesProgress]:
    """Extract codes of DATA (folder, list file, or a list of paths) with `vm`, yielding progress per batch.

    out: a directory; finished batches are kept in `out/.codes-parts` (every `checkpoint_every` batches and on
    abort) and the result is written to `out/codes.npz`. out=None keeps everything in memory (the app).
    resume: continue from the parts of an interrupted run with the same images/model/layer. abort: checked
    between batches; the generator then ends without a result (parts kept for `resume`). thumb: side of the
    stored thumbnails (0: none). stop_after_batches: raise KeyboardInterrupt after that many (tests).
    """
    from ..topk.distributed import Dist
    from ..topk.images import image_batches

    dist = dist or Dist()
    notice = on_notice or (lambda _text: None)
    if batch_size < 1:
        raise ParamError("batch_size", f"must be at least 1, got {batch_size}")
    if not 0 <= thumb <= MAX_THUMB:
        raise ParamError("thumb", f"must be between 0 and {MAX_THUMB} pixels, got {thumb}")
    if checkpoint_every < 1:
        raise ParamError("checkpoint_every", f"must be at least 1, got {checkpoint_every}")
    code_layer = resolve_code_layer(vm, layer)
    paths = image_list(data, Path(out).expanduser() if out is not None else None)
    config = {"files": hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest(), "model": vm.name,
              "weights": str(vm.weights), "layer": code_layer, "input_size": vm.input_size,
              "crop": vm.preprocess.crop, "thumb": thumb}
    parts_dir: Path | None = None
    if out is not None:
        out = Path(out).expanduser()
        if out.exists() and not out.is_dir():
            raise ParamError("out", f"{out} exists and is not a folder")
        if not out.parent.is_dir():
            raise ParamError("out", f"{out}: the folder {out.parent} does not exist")
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
                    raise ParamError("resume", f"cannot continue the run in {out}: it used a different "
                                               f"{', '.join(diff) or 'configuration'}; start again without it")
            elif parts_dir.exists():
                if any(parts_dir.glob("part-*.npz")):
                    notice(f"discarding the interrupted extraction in {parts_dir} (a resumed run would continue it)")
                shutil.rmtree(parts_dir)
            elif resume:
                notice(f"nothing to resume in {out}; extracting from the start")
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
        from ..topk.store import kill_point

        kill_point("embed-codes")

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
        raise DeepVisError(f"{missing} images have no code after the run (under torchrun, the output folder must "
                           "be on a file system all ranks share)")
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
    from ..topk.distributed import Dist
    from ..topk.images import Progress

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
