"""Top-activating images in the inspector: an opened top-k store (File > Open top-k store), or the live top-k of
the camera frames; a clicked tile opens its whole image with the receptive-field box; the live top-k can be
saved as a store. Every store read (opening it, a unit's entries and crops, a whole image) and every save runs
as a background job, so the GUI thread never touches the disk and a slow disk never stalls the live view."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from ...pipeline import FrameResult
from ...state import LIVE_TOPK_K
from ..feature import Feature, MenuItem, Panel
from ..widgets.topk_panel import ImageViewer, TileInfo, TopKPanel

OPEN_SLOT, TILES_SLOT, RENDER_SLOT = "topk-open", "topk-tiles", "topk-render"
NO_STORE = "Top-activating images:\nno store loaded\n(File > Open top-k store, or turn on live top-k)"


class TopKFeature(Feature):
    name = "topk"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.panel = TopKPanel()
        self.store = None  # the opened TopKStore (state.store is its path)
        self.store_message = NO_STORE
        self.viewer: ImageViewer | None = None  # the non-modal whole-image view of a clicked tile
        self._key: tuple | None = None  # what the panel shows (store/unit/kind or live/unit/epoch)
        self._entries: list = []  # the store entries behind the shown tiles (rank order)
        self.live_tiles: tuple | None = None  # the live tiles on screen (the worker reuses unchanged tuples)
        self._fresh: dict[tuple, object] = {}  # (layer, unit, rank, kind) -> crop rendered here (read-only stores)
        self._rendered: set[tuple] = set()  # (store, unit) whose backprop crops are all there
        self._rendering: tuple | None = None  # (store, unit) the render job works on
        self.save_action = self.action("Save live top-k as store...", self.save_live_dialog)
        st = ctx.state
        p = self.panel
        p.kind_changed.connect(lambda _k: self.update(force=True))
        p.live_toggled.connect(lambda on: setattr(st, "live_topk", bool(on)))
        p.clear_clicked.connect(self.clear_live)
        p.save_clicked.connect(self.save_live_dialog)
        p.tile_clicked.connect(self.open_tile)
        st.events.store.connect(self._load_store)
        st.events.unit.connect(lambda *_: self.update())
        st.events.live_topk.connect(self._live_changed)
        st.events.live_topk_epoch.connect(lambda *_: self.update())
        ctx.live.model_changed.connect(lambda _vm: st.reset("store"))
        ctx.live.painted.connect(self.paint_live)
        self._load_store(st.store)
        self._live_changed()

    # -- the store
    @property
    def store_name(self) -> str:
        return Path(self.store.root).name if self.store is not None else ""

    def open_store(self, path: str) -> None:
        """Show the top-activating images of the store at `path` (File menu; a saved live top-k too)."""
        if self.ctx.state.store == str(path):
            self._load_store(str(path))
        self.ctx.state.store = str(path)

    def _load_store(self, path: str | None, *_old) -> None:
        self.store = None
        self._key = None
        self.ctx.jobs.cancel(TILES_SLOT)
        if not path:
            self.ctx.jobs.cancel(OPEN_SLOT)
            self.store_message = NO_STORE
            self.update()
            return
        self.store_message = f"opening top-k store {Path(path).name}..."
        self.update()

        def work(_abort):
            from ...topk.store import TopKStore

            return TopKStore.open(path)

        def opened(store) -> None:
            if self.ctx.state.store != path:
                return  # another store was chosen meanwhile
            self.store = store
            self.store_message = f"no top-k data for this unit in {self.store_name}"
            self.ctx.notify(f"top-k store: {store.root} ({', '.join(store.layers)})", "info", 8)
            self.update()

        def failed(message: str) -> None:
            self.store_message = "Top-activating images:\nstore not readable"
            self.ctx.notify(message, "error")
            self.update()

        self.ctx.jobs.start(OPEN_SLOT, work, on_done=opened, on_error=failed)

    @property
    def loading(self) -> bool:
        """A store is being opened or the shown unit's tiles are being read."""
        return self.ctx.jobs.current(OPEN_SLOT) is not None or self.ctx.jobs.current(TILES_SLOT) is not None

    def open_store_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.panel.window(), "Open top-k store")
        if path:
            self.open_store(path)

    def update(self, force: bool = False) -> None:
        """The store's tiles for the selected unit, read in the background (live tiles are painted from the
        results instead)."""
        panel = self.panel
        st = self.ctx.state
        unit = st.unit
        if st.live_topk:
            self.ctx.jobs.cancel(TILES_SLOT)
            panel.set_kinds(("input",))
            key = ("live", str(unit), st.live_topk_epoch)
            if key != self._key:
                self._key, self.live_tiles, self._entries = key, None, []
                panel.show_message("live top-k: no frames yet" if unit is not None else "select a unit",
                                   "live top-k: collecting...")
            return
        store = self.store
        panel.set_kinds(store.kinds if store is not None else ("input",))
        kind = panel.kind
        key = (id(store), str(unit), kind)
        if key == self._key and not force:
            return
        before, entries = self._key, self._entries
        self._key, self._entries = key, []
        self.ctx.jobs.cancel(TILES_SLOT)
        if store is None or unit is None:
            panel.show_message(self.store_message if unit is not None else "select a unit")
            return
        name = self.store_name
        if unit.layer not in store.layers:
            panel.show_message(f"no top-k data for this unit in {name}\n(layer {unit.layer} not in the store)",
                               f"store {name}: {', '.join(store.layers)}")
            return
        if key != before:
            if before is not None and before[:2] == key[:2] and entries:  # another kind of the same tiles
                self._entries = entries
                panel.show_tiles([None] * len(entries), [TileInfo(e.rank, e.value, e.path or f"image {e.image_id}",
                                                                  len(entries)) for e in entries],
                                 panel.summary, missing=f"{kind}\nreading...")
            else:
                panel.show_message(f"{unit}: reading the top-k images of store {name}...")

        def work(_abort):
            entries = store.entries(unit.layer, unit.channel)
            return entries, [store.crop(unit.layer, unit.channel, e.rank, kind) for e in entries]

        self.ctx.jobs.start(TILES_SLOT, work, on_done=lambda got: self._show_tiles(key, unit, kind, *got),
                            on_error=lambda msg: panel.show_message(f"top-k store error: {msg}"))

    def _show_tiles(self, key: tuple, unit, kind: str, entries: list, crops: list) -> None:
        """The read entries and crops of `unit` (crops rendered here for a read-only store fill the gaps)."""
        store, panel, name = self.store, self.panel, self.store_name
        if key != self._key or store is None:
            return
        if not entries:
            panel.show_message(self.store_message, f"store {name}")
            return
        self._entries = entries
        crops = [c if c is not None else self._fresh.get((unit.layer, unit.channel, e.rank, kind))
                 for c, e in zip(crops, entries, strict=True)]
        rendering = kind in store.lazy_kinds and any(c is None for c in crops)
        infos = [TileInfo(e.rank, e.value, e.path or f"image {e.image_id}", len(entries)) for e in entries]
        panel.show_tiles(crops, infos, f"{unit}: top {len(entries)} of {store.top_k} from store {name}"
                         f"{'' if kind == 'input' else ' (' + kind + ')'}",
                         missing=f"{kind}\nrendering..." if rendering else f"{kind}\nnot stored")
        self._render_missing(unit)

    def _render_missing(self, unit) -> None:
        """On first view of a unit of a lazy store, render its deconv / guided crops in the background (written
        into the store, so the next view is instant); the tiles fill in as they arrive. The job itself checks
        which crops are missing (a disk read)."""
        store = self.store
        key = (id(store), str(unit))
        if store is None or not store.lazy_kinds or unit.layer not in store.layers or key in self._rendered:
            return
        if self.ctx.jobs.current(RENDER_SLOT) is not None and self._rendering == key:
            return  # already on it
        self._rendering = key
        load = self.ctx.live.model_copy_loader(RENDER_SLOT)
        kinds = list(store.lazy_kinds)
        fresh = {k for k in self._fresh if k[:2] == (unit.layer, unit.channel)}

        def work(abort):
            from ...topk.crops import iter_render_unit

            entries = store.entries(unit.layer, unit.channel)
            if all(store.crop(unit.layer, unit.channel, e.rank, k) is not None
                   or (unit.layer, unit.channel, e.rank, k) in fresh for e in entries for k in kinds):
                return key
            gen = iter_render_unit(store, load(), unit.layer, unit.channel, kinds)
            try:
                for crop in gen:
                    if abort.is_set():
                        return None
                    yield crop
            finally:
                gen.close()
            return key

        self.ctx.jobs.start(RENDER_SLOT, work, on_yield=self._crop_arrived,
                            on_done=lambda k: self._rendered.add(k) if k is not None else None,
                            on_error=lambda msg: self.ctx.notify(f"top-k crops not rendered: {msg}", "error"))

    def _crop_arrived(self, crop) -> None:
        if not crop.written:
            self._fresh[(crop.layer, crop.unit, crop.rank, crop.kind)] = crop.image
        unit = self.ctx.state.unit
        if (unit is not None and (unit.layer, unit.channel) == (crop.layer, crop.unit) and not self.ctx.state.live_topk
                and self.panel.kind == crop.kind):
            self.update(force=True)

    # -- the live top-k
    def _live_changed(self, *_args) -> None:
        on = self.ctx.state.live_topk
        self.panel.set_live(on)
        self.save_action.setEnabled(on)
        self.live_tiles = None
        self._key = None
        self.update()

    def clear_live(self) -> None:
        self.live_tiles = None
        self.ctx.state.live_topk_epoch += 1
        self.panel.show_message("live top-k: no frames yet", "live top-k: cleared")

    def paint_live(self, res: FrameResult) -> None:
        if not self.ctx.state.live_topk:
            return
        panel = self.panel
        tiles = res.live_topk
        if tiles is None or res.unit is None:
            return
        summary = (f"live top-k: {res.unit}, {len(tiles)} of {LIVE_TOPK_K}, {res.live_topk_frames} frames held; "
                   f"one tile per moment (a repeated view only replaces its tile when it excites more)")
        if tiles is self.live_tiles:
            if panel.summary != summary:
                panel.set_summary(summary)
            return
        self.live_tiles = tiles
        if not tiles:
            panel.show_message("live top-k: no frames yet", summary)
            return
        infos = [TileInfo(i, t.value, f"frame {t.frame_id}", len(tiles)) for i, t in enumerate(tiles)]
        panel.show_tiles([t.patch for t in tiles], infos, summary)

    def save_live_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.panel.window(), "Save live top-k as store", "live-topk",
                                              "Top-k store (folder)")
        if path:
            self.save_live(path)

    def save_live(self, path: str) -> None:
        """Save a copy of the live top-k as a STORE on a background job (capture goes on meanwhile)."""
        ctx = self.ctx
        snap = ctx.live.worker.live_topk_snapshot()
        if snap is None or snap.image_count == 0:
            ctx.notify("live top-k: nothing to save yet (turn on live top-k and let some frames in)", "error")
            return
        model = {"name": ctx.vm.name, "weights": str(getattr(ctx.vm, "weights", ""))}
        ctx.notify(f"saving live top-k to {path}...", "info", 4)
        ctx.jobs.start("topk-save", lambda _abort: snap.save(path, model=model),
                       on_done=lambda out: ctx.notify(f"live top-k saved: {out} (File > Open top-k store to "
                                                      f"browse it)", "info", 15),
                       on_error=lambda msg: ctx.notify(f"live top-k not saved: {msg}", "error"))

    # -- the whole-image viewer
    def open_tile(self, index: int) -> None:
        """Show a tile's whole image (as the network saw it) with its receptive-field box, non-modal."""
        ctx = self.ctx
        if self.viewer is None:
            self.viewer = ImageViewer(self.panel.window())
        viewer = self.viewer
        tiles = self.live_tiles if ctx.state.live_topk else None
        if tiles:
            if not 0 <= index < len(tiles):
                return
            t = tiles[index]
            unit = ctx.live.shown.unit if ctx.live.shown is not None else ctx.state.unit
            ctx.jobs.cancel("topk-image")
            viewer.show_image(t.frame, t.box, f"live top-k: {unit} rank {index + 1}",
                              f"<b>{unit}</b> rank {index + 1} &nbsp;value {t.value:.4g} &nbsp;frame {t.frame_id}"
                              f" &nbsp;at ({t.y}, {t.x}) &nbsp;box {t.box}")
            return
        if self.store is None or not 0 <= index < len(self._entries):
            return
        entry = self._entries[index]
        store = self.store
        title = f"{self.store_name}: {entry.layer}:{entry.unit} rank {entry.rank + 1}"
        details = (f"<b>{entry.layer}:{entry.unit}</b> rank {entry.rank + 1} &nbsp;value {entry.value:.4g}"
                   f" &nbsp;at ({entry.y}, {entry.x}) &nbsp;box {entry.box}<br>{entry.path}")
        viewer.show_image(None, None, title, details, missing="loading...")
        ctx.jobs.start("topk-image", lambda _abort: store.fitted(entry),
                       on_done=lambda image: viewer.show_image(image, entry.box, title, details,
                                                               missing=f"image not found:\n{entry.path}"),
                       on_error=lambda msg: viewer.show_image(None, None, title, details, missing=msg))

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("topk", "Top-k", self.panel, area="in:inspector",
                      place={"row": 0, "col": 1, "rowspan": 2, "colspan": 2})]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&File", self.action("Open top-k store...", self.open_store_dialog)),
                MenuItem("&File", self.save_action)]

    def snapshot_state(self) -> dict:
        res = self.ctx.live.shown
        return {"store": str(self.store.root) if self.store is not None else None,
                "topk_tiles": len(self.panel.tiles), "topk_message": self.panel.message_text,
                "live_topk_tiles": len(res.live_topk) if res is not None and res.live_topk is not None else None,
                "live_topk_frames": res.live_topk_frames if res is not None else 0}

    def shutdown(self) -> None:
        for slot in (OPEN_SLOT, TILES_SLOT, RENDER_SLOT, "topk-image"):
            self.ctx.jobs.cancel(slot)
        if self.viewer is not None:
            self.viewer.close()
