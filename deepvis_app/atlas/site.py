"""Build a static atlas site from a top-k store (and the optimize cache): the job, stage by stage.

Stages: statistics (one forward of the store's images, kept for a resumed build), optimized images (only with
`optimize=True`: missing ones are made with the app's settings and land in the shared cache, sharded over torchrun
ranks), images (one thumbnail per stored crop and per image, one PNG original per image), pages, publish. Every
stage reports through `on_progress`; notices (a model that does not match the store, ...) go to `on_notice`.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepVisError, ParamError
from ..topk.store import Entry, TopKStore, crop_box, read_rgb
from . import images, pages
from .job import GENERATOR, Job, check_target, kill_point, output_lock, recover, tree_size
from .stats import activation_stats, matches_store, sample_ids, topk_stats, unit_labels, unit_stats

VERSION = 1
MATCH_SHARE = 0.9  # at least this share of units must give back their stored best value for the model to count


@dataclass(frozen=True)
class AtlasProgress:
    """`stage` ("stats", "optimize", "images", "pages", "publish"): `done` of `total` steps."""

    stage: str
    done: int
    total: int


@dataclass
class AtlasReport:
    out: Path
    layers: list[str]
    units: int
    pages: int
    bytes: int
    files: int
    kept: int
    resumed: bool
    stats_from: str
    optimized_shown: int
    optimized_made: int
    seconds: float
    notices: list[str] = field(default_factory=list)


def slugify(name: str, taken: set[str]) -> str:
    """A folder name for a layer that reads like the layer (`_blocks.10`, `_swish@1`) and is safe in a URL."""
    slug = re.sub(r"[^A-Za-z0-9_.@-]", "_", name) or "layer"
    if slug.startswith("."):
        slug = "_" + slug
    base, n = slug, 2
    while slug.lower() in taken or slug.lower() in ("img", "atlas.css", "index.html", "atlas.json"):
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug.lower())
    return slug


def resolve_layers(store: TopKStore, layers: str | Sequence[str] | None, vm=None) -> list[str]:
    """The store's layers to show (all by default); names or the window's titles ("block 3")."""
    if layers is None or layers == "" or layers == []:
        return store.layers
    wanted = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else list(layers)
    out = []
    for text in (w for w in wanted if w):
        name = text
        if name not in store.layers and vm is not None:
            try:
                name = vm.resolve_layer(text)
            except DeepVisError:
                pass
        if name not in store.layers:
            raise ParamError("layers", f"names {text!r}, which is not in the store; stored: {', '.join(store.layers)}")
        out.append(name)
    return list(dict.fromkeys(out))


def model_title(vm, store: TopKStore) -> str:
    if vm is None:
        m = store.model
        return f"{m.get('name', 'model')} ({m.get('weights', '?')} weights)"
    return vm.title


class _Fitted:
    """Decoded fitted images by id, least recently used dropped: entries of many units share images."""

    def __init__(self, store: TopKStore, keep: int = 256) -> None:
        self.store, self.keep, self.items = store, keep, OrderedDict()

    def get(self, entry: Entry) -> np.ndarray | None:
        if entry.image_id in self.items:
            self.items.move_to_end(entry.image_id)
            return self.items[entry.image_id]
        rgb = self.store.fitted(entry)
        self.items[entry.image_id] = rgb
        if len(self.items) > self.keep:
            self.items.popitem(last=False)
        return rgb


def build_atlas(store_path: str | os.PathLike, out: str | os.PathLike, *, layers: str | Sequence[str] | None = None,
                vm: Any = None, optimize: bool = False, image_format: str = "webp", quality: int = 80,
                max_images: int = 512, dist: Any = None,
                on_progress: Callable[[AtlasProgress], None] | None = None,
                on_notice: Callable[[str], None] | None = None) -> AtlasReport | None:
    """Write the atlas of `store_path` into the folder `out` (replaced atomically; resumed after a kill).

    vm: the store's model (statistics, labels, optimized images); None builds from the store alone. With
    `optimize`, units without a cached optimized image get one (needs vm). Under torchrun (`dist` from
    `topk.scan.init_distributed`) every rank optimizes its share and rank 0 builds the site; other ranks return
    None.
    """
    t0 = time.perf_counter()
    fmt = images.check_format(image_format)
    if not 1 <= quality <= 100:
        raise ParamError("quality", f"must be between 1 and 100, got {quality}")
    if max_images < 1:
        raise ParamError("max_images", f"must be at least 1, got {max_images}")
    if optimize and vm is None:
        raise ParamError("optimize", "needs the store's model, which is not loaded")
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        if on_notice is not None:
            on_notice(text)

    def progress(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(AtlasProgress(stage, done, total))

    store = TopKStore.open(store_path)
    names = resolve_layers(store, layers, vm)
    if not store.kinds:
        notice("the store has no images (a --no-crops scan): pages show numbers only")
    out = Path(out).expanduser()
    rank = getattr(dist, "rank", 0)
    if rank == 0:
        check_target(out)
    made = _optimize(vm, names, dist, progress) if optimize else 0
    if rank != 0:
        return None
    with output_lock(out):
        recover(out)
        check_target(out)
        fingerprint = {"generator": GENERATOR, "version": VERSION, "store": str(store.root.resolve()),
                       "store_created": store.index.get("created"), "layers": names, "format": fmt,
                       "quality": quality, "max_images": max_images,
                       "model": None if vm is None else [vm.name, str(vm.weights)]}
        job = Job(out, fingerprint)
        stats, vm = _stats(job, store, names, vm, max_images, progress, notice)
        views = _images(job, store, names, vm, stats, fmt, quality, progress)
        n_pages = _pages(job, store, views, vm, progress)
        progress("publish", 0, 1)
        marker = {"generator": GENERATOR, "version": VERSION, "store": str(store.root.resolve()),
                  "model": store.model, "layers": [{"name": lv.name, "slug": lv.slug, "units": len(lv.units)}
                                                   for lv in views],
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        resumed, kept = job.resumed, job.kept
        job.publish(marker)
        progress("publish", 1, 1)
    size, files = tree_size(out)
    return AtlasReport(out=out, layers=names, units=sum(len(lv.units) for lv in views), pages=n_pages, bytes=size,
                       files=files, kept=kept, resumed=resumed, stats_from="images" if stats else "top-k",
                       optimized_shown=sum(u.optimized is not None for lv in views for u in lv.units),
                       optimized_made=made, seconds=round(time.perf_counter() - t0, 2), notices=notices)


def _optimize(vm, names: list[str], dist, progress) -> int:
    """Make the optimized images the cache lacks (the app's settings, so the window finds them too)."""
    from ..optimize import optimize
    from ..optimize.unit_images import app_settings, cached_unit_image, unit_objective

    steps, size = app_settings()
    rank, world = getattr(dist, "rank", 0), getattr(dist, "world", 1)
    units = [(layer, u) for layer in names for u in range(vm.channels(layer))]
    mine = units[rank::world]
    todo = [(layer, u) for layer, u in mine if cached_unit_image(vm, layer, u, steps=steps, size=size) is None]
    progress("optimize", 0, len(todo))
    for k, (layer, u) in enumerate(todo):
        optimize(vm, unit_objective(vm, layer, u), steps=steps, size=size, yield_every=10**9)
        progress("optimize", k + 1, len(todo))
    if dist is not None and getattr(dist, "on", False):
        return sum(dist.all_gather(len(todo)))  # also waits for every rank's share
    return len(todo)


def _stats(job: Job, store: TopKStore, names: list[str], vm, max_images: int, progress, notice):
    """(layer -> (max, mean) arrays or {} without a model, the model or None when it does not match the store)."""
    if vm is None:
        return {}, None
    path = job.cache_dir() / "stats.npz"
    data = None
    if job.resumed and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            data = None
    if data is None:
        ids = sample_ids(store, names, max_images)
        if not ids:
            notice("the store holds no images to compute statistics from: pages show the top-k values only")
            return {}, vm
        progress("stats", 0, len(ids))
        data = activation_stats(vm, store, names, ids, on_step=lambda d, t: progress("stats", d, t))
        data["ids"] = np.asarray(ids, np.int64)
        from ..fileio import atomic_save_npz

        atomic_save_npz(path, **data)
    ids = data["ids"].tolist()
    checked = agree = 0
    for name in names:
        c, a = matches_store(store, name, ids, data[f"{name}/max"])
        checked, agree = checked + c, agree + a
    if checked and agree < MATCH_SHARE * checked:
        notice(f"model {vm.name} ({vm.weights} weights) does not give the store's values back ({agree} of {checked} "
               "units agree): statistics, labels and optimized images are left out")
        return {}, None
    return {name: (data[f"{name}/max"], data[f"{name}/mean"]) for name in names}, vm


def _covers_image(box: tuple[int, int, int, int], size: int) -> bool:
    top, left, bottom, right = box
    return top <= 0 and left <= 0 and bottom >= size and right >= size


def _images(job: Job, store: TopKStore, names: list[str], vm, stats, fmt: str, quality: int,
            progress) -> list[pages.LayerView]:
    """Thumbnails and originals (each written once), and the views the pages are made of."""
    ext = images.suffix(fmt)
    size = store.input_size
    fitted = _Fitted(store)
    labels = unit_labels(vm, names) if vm is not None else {}
    titles = {ls.name: ls.title for ls in vm.shown_layers} if vm is not None else {}
    opt = None
    if vm is not None:
        from ..optimize.unit_images import app_settings, cached_unit_image

        steps, osize = app_settings()

        def opt(layer: str, unit: int):
            return cached_unit_image(vm, layer, unit, steps=steps, size=osize)

    total = sum(store.channels(n) for n in names)
    done = 0
    progress("images", 0, total)
    taken: set[str] = set()
    views = []
    for name in names:
        info = store.layer_info(name)
        slug = slugify(name, taken)
        arrays_max, arrays_mean = stats.get(name, (None, None))
        units = []
        for unit in range(store.channels(name)):
            entries = store.entries(name, unit)
            values = np.asarray([e.value for e in entries], np.float64)
            if arrays_max is not None:
                st, src = unit_stats(arrays_max[:, unit], arrays_mean[:, unit], values), "images"
            else:
                st, src = topk_stats(values), "top-k"
            views_e = [_entry_view(job, store, fitted, e, slug, ext, fmt, quality, size) for e in entries]
            optimized = None
            if opt is not None:
                rel = f"{slug}/opt/u{unit:05d}"
                if job.has(rel + ".png") and job.has(rel + ext):
                    optimized = pages.Pic(rel + ext, rel + ".png", f"optimized image of unit {unit}")
                else:
                    rgb = opt(name, unit)
                    if rgb is not None:
                        job.write(rel + ".png", images.encode_original(rgb))
                        job.write(rel + ext, images.encode_thumb(rgb, fmt, quality, side=192))
                        optimized = pages.Pic(rel + ext, rel + ".png", f"optimized image of unit {unit}")
            best = None
            if views_e:
                first = views_e[0]
                best = first.crops.get("input") or first.whole
            lab = labels.get(name)
            short, label = lab[unit] if lab and unit < len(lab) else ("", "")
            units.append(pages.UnitView(unit=unit, label=label, short=short, best=best,
                                        optimized=optimized, stats=st, stats_from=src,
                                        top_value=entries[0].value if entries else float("nan"), entries=views_e))
            done += 1
            if done % 16 == 0 or done == total:
                progress("images", done, total)
        views.append(pages.LayerView(name=name, title=titles.get(name, name), slug=slug,
                                     shape=tuple(info.get("shape", [])), units=units,
                                     spatial=bool(info.get("spatial", True))))
    return views


def _entry_view(job: Job, store: TopKStore, fitted: _Fitted, e: Entry, slug: str, ext: str, fmt: str,
                quality: int, size: int) -> pages.EntryView:
    whole_rel = f"img/i{e.image_id:08d}"
    whole = None
    if job.has(whole_rel + ext) and job.has(whole_rel + ".png"):
        ok = True
    else:
        rgb = fitted.get(e)
        ok = rgb is not None
        if ok:
            job.write(whole_rel + ".png", images.encode_original(rgb))
            job.write(whole_rel + ext, images.encode_thumb(rgb, fmt, quality, side=160))
    if ok:
        top, left, bottom, right = e.box
        frac = None if _covers_image(e.box, size) else (top / size, left / size, bottom / size, right / size)
        whole = pages.Pic(whole_rel + ext, whole_rel + ".png", f"image {e.image_id}", box=frac)
    crops: dict[str, pages.Pic] = {}
    for kind in ("input", "deconv", "guided"):
        stored = store.crop_path(e.layer, e.unit, e.rank, kind)
        if kind == "input" and not stored.is_file() and (whole is None or _covers_image(e.box, size)):
            continue  # the receptive field is the whole image: the image itself stands for the crop
        if kind != "input" and not stored.is_file():
            continue  # deconv / guided crops only where the store has them
        rel = f"{slug}/c/u{e.unit:05d}_r{e.rank:03d}_{kind}{ext}"
        if not job.has(rel):
            if stored.is_file():
                rgb = read_rgb(stored)
            else:
                full = fitted.get(e)
                rgb = None if full is None else crop_box(full, e.box)[0]
            if rgb is None or rgb.size == 0:
                continue
            job.write(rel, images.encode_thumb(rgb, fmt, quality))
        href = whole_rel + ".png" if kind == "input" and whole is not None else rel
        crops[kind] = pages.Pic(rel, href, f"{kind} crop, rank {e.rank + 1}")
    return pages.EntryView(rank=e.rank, value=e.value, y=e.y, x=e.x, box=e.box,
                           source=os.path.basename(e.path) if e.path else "", whole=whole, crops=crops)


def _pages(job: Job, store: TopKStore, views: list[pages.LayerView], vm, progress) -> int:
    title = model_title(vm, store)
    total = sum(len(lv.units) for lv in views) + len(views) + 1
    done = 0
    progress("pages", 0, total)
    job.write_text("atlas.css", pages.CSS)
    for k, lv in enumerate(views):
        for u in lv.units:
            job.write_text(f"{lv.slug}/{u.unit}.html", pages.unit_page(title, views, k, u))
            done += 1
            if done % 64 == 0:
                progress("pages", done, total)
        job.write_text(f"{lv.slug}/index.html", pages.layer_page(title, views, k))
        done += 1
        kill_point("pages")
    report = store.report
    facts = (f"{report.get('images_scanned', store.index.get('num_images', '?'))} images scanned, top-{store.top_k} "
             f"per unit, {sum(len(lv.units) for lv in views)} units in {len(views)} layers. "
             f"Built by DeepVis from a {store.index.get('source', 'scan')} store.")
    job.write_text("index.html", pages.index_page(f"{title}: atlas", escape(facts), views))
    progress("pages", total, total)
    return done + 1
