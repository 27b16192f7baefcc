"""Embedding: what the network finds similar. A t-SNE map of the codes before the classifier for a folder of images
(made here in the background, or a `deepvis embed` output opened), drawn as thumbnails coloured by predicted
class; hover for the file and class, click to open the image. The live camera frame is a moving marker placed
into the map as it changes, with its 9 nearest images in code space (cosine) shown live.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFileDialog, QGridLayout, QHBoxLayout, QLabel, QPushButton

from ...pipeline import FrameResult
from ..feature import TOOLS, Feature, MenuItem, Panel
from ..widgets.canvas import ImageCanvas
from ..widgets.frame_tag import FrameTag, same_picture
from ..widgets.panel import ToolPanel, assemble, control_row, small_progress
from ..widgets.topk_panel import ImageViewer

SLOT, LIVE_SLOT = "embed", "embed-live"
MAX_THUMBS = 400  # thumbnails drawn in the map (all points get a dot); more would only blur into each other
LIVE_EVERY_S = 0.25  # place the live frame at most this often
NEIGHBOURS = 9


def class_color(index: int) -> QColor:
    """A stable, distinct-ish colour per class index (golden-ratio hues)."""
    return QColor.fromHsvF((index * 0.61803398875) % 1.0, 0.65, 0.95)


def embed_dir(folder: str, model: str) -> Path:
    """Where the app keeps the embedding of `folder` for `model` ($DEEPVIS_CACHE/embed/...)."""
    root = Path(os.environ.get("DEEPVIS_CACHE") or Path.home() / ".cache" / "deepvis")
    key = hashlib.sha256(f"{Path(folder).resolve()}|{model}".encode()).hexdigest()[:16]
    return root / "embed" / f"{Path(folder).name or 'images'}-{model}-{key}"


class EmbeddingFeature(Feature):
    name = "embedding"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.codes = None  # embed.Codes of the shown map
        self.map = None  # embed.EmbeddingMap
        self.live_xy: np.ndarray | None = None
        self.neighbours: list[int] = []
        self._last_live = 0.0
        self.viewer: ImageViewer | None = None
        self.panel = self._build()
        ctx.live.painted.connect(self._on_frame)
        ctx.live.painted.connect(self.tag.refresh)
        ctx.live.model_changed.connect(lambda _vm: self._clear("the model changed: embed the folder again"))

    def _build(self) -> ToolPanel:
        w = ToolPanel()
        self.embed_button = QPushButton("embed a folder...")
        self.embed_button.setToolTip("codes before the classifier for every image of a folder, then a t-SNE map "
                                     "(kept in the cache: opening the same folder again is instant)")
        self.embed_button.clicked.connect(self.embed_folder_dialog)
        self.open_button = QPushButton("open embedding...")
        self.open_button.setToolTip("a folder written by `deepvis embed DATA --out DIR`")
        self.open_button.clicked.connect(self.open_dialog)
        self.progress = small_progress()
        self.fit_button = QPushButton("fit")
        self.fit_button.setToolTip("show the whole map (wheel: zoom, drag: pan)")
        self.fit_button.clicked.connect(self.fit)
        # the map fills the panel; wheel zooms and drag pans (thumbnails grow as you zoom in)
        self.plot = pg.GraphicsView(background=QColor(14, 15, 19))
        self.plot.setMinimumSize(120, 120)
        self.vb = pg.ViewBox(lockAspect=True, enableMenu=False)
        self.vb.setDefaultPadding(0.02)
        self.vb.setMouseEnabled(x=True, y=True)
        self.plot.setCentralItem(self.vb)
        self.plot.setToolTip("wheel: zoom, drag: pan; hover a point for its file and class, click to open it")
        self.dots = pg.ScatterPlotItem(size=6, pen=None, hoverable=True)
        self.dots.sigHovered.connect(self._hovered)
        self.dots.sigClicked.connect(self._clicked)
        self.vb.addItem(self.dots)
        self.marker = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen("w", width=1.5),
                                         brush=pg.mkBrush(255, 214, 10))
        self.marker.setZValue(20)
        self.vb.addItem(self.marker)
        self._thumb_items: list[pg.ImageItem] = []
        self.info = QLabel("embed a folder of images (or open a `deepvis embed` output) to see the map")
        self.info.setWordWrap(True)
        self.neighbour_canvases = [ImageCanvas("", smooth=True, min_size=24) for _ in range(NEIGHBOURS)]
        row = QHBoxLayout()  # a strip under the map: the map keeps the room
        row.setSpacing(2)
        row.addWidget(QLabel("nearest to\nthe camera:"))
        for canvas in self.neighbour_canvases:
            canvas.setMaximumHeight(72)
            row.addWidget(canvas, 1)
        self.tag = FrameTag("nearest to")
        body = QGridLayout()
        body.addWidget(self.plot, 0, 0)
        assemble(w, [control_row(self.embed_button, self.open_button, self.fit_button, self.progress)], body, [])
        w.layout().addLayout(row)
        w.layout().addWidget(self.tag)
        w.layout().addWidget(self.info)
        return w

    def fit(self) -> None:
        """The whole map in view."""
        self.vb.autoRange(padding=0.02)

    # -- making and opening maps
    def embed_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.panel.window(), "Embed the images of a folder")
        if folder:
            self.embed_folder(folder)

    def embed_folder(self, folder: str, out: str | None = None) -> None:
        """Codes + t-SNE map of `folder`'s images in the background (resumable; the result is cached)."""
        from ...embed import iter_embed, load_result

        ctx = self.ctx
        model = ctx.vm.name
        load = ctx.live.model_copy_loader(SLOT)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.info.setText(f"embedding {folder}: reading images...")

        def work(abort):
            out_dir = Path(out) if out else embed_dir(folder, model)
            if (out_dir / "embedding.json").is_file():
                return load_result(out_dir)  # made before: from the cache, no new extraction
            out_dir.mkdir(parents=True, exist_ok=True)
            last = None
            for p in iter_embed(load(), folder, str(out_dir), abort=abort, resume=True, pictures=False):
                last = p
                yield p
            return load_result(out_dir) if last is not None and last.stage == "done" else None

        def step(p) -> None:
            if p.stage == "codes":
                self.progress.setRange(0, max(1, p.total))
                self.progress.setValue(p.done)
                self.info.setText(f"codes: {p.done} of {p.total} images")
            elif p.stage == "map":
                self.progress.setRange(0, 0)
                self.info.setText(f"t-SNE map of {p.total} codes...")

        ctx.jobs.start(SLOT, work, on_yield=step, on_done=self._loaded,
                       on_error=lambda msg: self._clear(f"embedding failed: {msg}"))

    def open_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.panel.window(), "Open a deepvis embed output")
        if folder:
            self._load(folder)

    def _load(self, out: str) -> None:
        from ...embed import load_result

        self.info.setText(f"opening {out}...")
        self.ctx.jobs.start(SLOT, lambda _abort: load_result(out), on_done=self._loaded,
                            on_error=lambda msg: self._clear(f"cannot open the embedding: {msg}"))

    def _clear(self, message: str) -> None:
        self.progress.hide()
        self.info.setText(message)

    def _loaded(self, result) -> None:
        self.progress.hide()
        if result is None:
            self.info.setText("embedding stopped")
            return
        self.codes, self.map = result
        self.live_xy, self.neighbours = None, []
        self.tag.set_frame(None)
        self._draw_map()
        self.info.setText(f"{len(self.codes)} images, codes of {self.codes.layer} ({self.codes.codes.shape[1]} "
                          f"numbers), {self.map.method}; hover a point for its file and class, click to open it")

    def _draw_map(self) -> None:
        codes, emap = self.codes, self.map
        xy = emap.xy
        self.dots.setData([{"pos": (float(x), float(y)), "data": i, "brush": pg.mkBrush(class_color(int(p)))}
                           for i, ((x, y), p) in enumerate(zip(xy, codes.pred, strict=True))])
        for item in self._thumb_items:
            self.vb.removeItem(item)
        self._thumb_items = []
        if codes.thumbs is not None:
            span = float(np.ptp(xy, axis=0).max()) or 1.0
            size = span / max(6.0, np.sqrt(len(xy)))  # thumbnails about touching at the full view
            step = max(1, len(xy) // MAX_THUMBS)
            for i in range(0, len(xy), step):
                item = pg.ImageItem(np.ascontiguousarray(codes.thumbs[i][::-1]), axisOrder="row-major")
                item.setRect(QRectF(float(xy[i, 0]) - size / 2, float(xy[i, 1]) - size / 2, size, size))
                item.setZValue(5)
                self.vb.addItem(item)
                self._thumb_items.append(item)
        self.fit()

    # -- the map under the pointer
    def describe(self, i: int) -> str:
        c = self.codes
        return f"{Path(c.paths[i]).name}: {c.label(i)} ({c.prob[i] * 100:.0f}%)"

    def _hovered(self, _item, points, _ev) -> None:
        if len(points):
            i = int(points[0].data())
            self.info.setText(f"{self.describe(i)}  \u2014 {self.codes.paths[i]}")

    def _clicked(self, _item, points, _ev) -> None:
        if len(points):
            self.open_image(int(points[0].data()))

    def open_image(self, i: int) -> None:
        from ...sources import read_image

        if self.viewer is None:
            self.viewer = ImageViewer(self.panel.window())
        path = self.codes.paths[i]
        self.ctx.jobs.start("embed-image", lambda _abort: read_image(path),
                            on_done=lambda img: self.viewer.show_image(img, None, Path(path).name,
                                                                       self.describe(i) + f"<br>{path}"),
                            on_error=lambda msg: self.ctx.notify(msg, "error"))

    # -- the live frame in the map
    def _on_frame(self, res: FrameResult) -> None:
        if self.map is None or not self.panel.isVisible() or self.ctx.jobs.current(LIVE_SLOT) is not None:
            return
        if same_picture(res.image, self.tag.image):
            return  # placed already (a frozen camera, a still image): nothing new to place
        now = time.monotonic()
        if now - self._last_live < LIVE_EVERY_S:
            return
        self._place(res)

    def _place(self, res: FrameResult) -> None:
        """Place `res`'s frame in the map (a code from one forward on a private model copy)."""
        from ...embed import code_of_image

        self._last_live = time.monotonic()
        load, frame, emap, layer = self.ctx.live.model_copy_loader(LIVE_SLOT), res.image, self.map, self.codes.layer

        def work(_abort):
            code, _probs = code_of_image(load(), frame, layer)
            return emap.locate(code, k=NEIGHBOURS)

        self.ctx.jobs.start(LIVE_SLOT, work, on_done=lambda located: self._placed(located, res),
                            on_error=lambda msg: self.info.setText(f"live placement failed: {msg}"))

    def _placed(self, located, res: FrameResult | None = None) -> None:
        """Show a placement; when the input has moved to another picture while it ran, place the newest frame at
        once (not at the next frame after a pause): the neighbours are never one photo behind for long, and
        the tag says which frame they belong to."""
        if res is not None:
            self.tag.set_frame(res)
            self.tag.refresh(self.ctx.live.shown)
        self._show_placement(located)
        shown = self.ctx.live.shown
        if (shown is not None and self.map is not None and self.panel.isVisible()
                and not same_picture(shown.image, self.tag.image)):
            self._place(shown)

    def _show_placement(self, located) -> None:
        xy, idx, sims = located
        self.live_xy = np.asarray(xy)
        self.neighbours = [int(i) for i in idx]
        self.marker.setData([float(xy[0])], [float(xy[1])])
        thumbs = self.codes.thumbs
        for k, canvas in enumerate(self.neighbour_canvases):
            if k < len(idx) and thumbs is not None:
                canvas.set_image(thumbs[int(idx[k])])
                canvas.caption = f"{sims[k]:.2f}"
                canvas.setToolTip(self.describe(int(idx[k])))
            else:
                canvas.clear("")

    # -- what the window gathers
    def open(self) -> None:
        self.show_panel("embedding")

    def panels(self) -> list[Panel]:
        return [Panel("embedding", "Embedding", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Embedding (t-SNE map, nearest images)", self.open))]

    def snapshot_state(self) -> dict:
        if self.map is None:
            return {}
        return {"embedding": {"images": len(self.codes), "layer": self.codes.layer,
                              "live_xy": None if self.live_xy is None else [float(v) for v in self.live_xy],
                              "neighbours": self.neighbours}}

    def shutdown(self) -> None:
        for slot in (SLOT, LIVE_SLOT):
            self.ctx.jobs.cancel(slot)
        if self.viewer is not None:
            self.viewer.close()
