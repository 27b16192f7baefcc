"""Top-activating images in the inspector: an opened top-k store, the live top-k, the whole-image viewer
of a clicked tile and saving the live top-k as a store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog

from ..errors import DeepVisError
from ..pipeline import FrameResult
from .topk_panel import ImageViewer, TileInfo

if TYPE_CHECKING:
    from .main_window import MainWindow


def load_store(win: MainWindow, path: str | None) -> None:
    win.store = None
    win._topk_key = None
    if not path:
        win.store_message = ("Top-activating images:\nno store loaded\n(File > Open top-k store, "
                             "or turn on live top-k)")
        return
    try:
        from ..topk.store import TopKStore

        win.store = TopKStore.open(path)
        win.store_message = f"no top-k data for this unit in {win.store_name}"
    except DeepVisError as err:
        win.store_message = "Top-activating images:\nstore not readable"
        win.notify(str(err), "error")


def store_name(win: MainWindow) -> str:
    return Path(win.store.root).name if win.store is not None else ""


def open_store(win: MainWindow, path: str) -> None:
    """Show the top-activating images of `path` (File > Open top-k store; a saved live top-k too)."""
    win._open_store(path)
    if win.store is not None:
        win.status.showMessage(f"top-k store: {win.store.root} ({', '.join(win.store.layers)})", 8000)
    win._sync_controls()


def open_store_dialog(win: MainWindow) -> None:
    path = QFileDialog.getExistingDirectory(win, "Open top-k store")
    if path:
        win.open_store(path)


def update_topk(win: MainWindow, force: bool = False) -> None:
    """The store's tiles for the selected unit (live tiles are painted from the results instead)."""
    panel = win.inspector.topk
    unit = win.request.unit
    if win.live_topk_on:
        panel.set_kinds(("input",))
        key = ("live", str(unit), win.request.live_topk_epoch)
        if key != win._topk_key:
            win._topk_key, win._live_shown = key, None
            win._topk_entries = []
            panel.show_message("live top-k: no frames yet" if unit is not None else "select a unit",
                               "live top-k: collecting...")
            win._repaint = True
        return
    panel.set_kinds(win.store.kinds if win.store is not None else ("input",))
    kind = panel.kind
    key = (id(win.store), str(unit), kind)
    if key == win._topk_key and not force:
        return
    win._topk_key = key
    win._topk_entries = []
    if win.store is None or unit is None:
        panel.show_message(win.store_message if unit is not None else "select a unit")
        return
    store = win.store
    name = win.store_name
    try:
        if unit.layer not in store.layers:
            panel.show_message(f"no top-k data for this unit in {name}\n(layer {unit.layer} not in the store)",
                               f"store {name}: {', '.join(store.layers)}")
            return
        entries = store.entries(unit.layer, unit.channel)
        crops = [store.crop(unit.layer, unit.channel, e.rank, kind) for e in entries]
    except (DeepVisError, OSError) as err:
        panel.show_message(f"top-k store error: {err}")
        return
    if not entries:
        panel.show_message(win.store_message, f"store {name}")
        return
    win._topk_entries = entries
    infos = [TileInfo(e.rank, e.value, e.path or f"image {e.image_id}", len(entries)) for e in entries]
    panel.show_tiles(crops, infos, f"{unit}: top {len(entries)} of {store.top_k} from store {name}"
                     f"{'' if kind == 'input' else ' (' + kind + ')'}", missing=f"{kind}\nnot stored")


def paint_live_topk(win: MainWindow, res: FrameResult) -> None:
    panel = win.inspector.topk
    tiles = res.live_topk
    if tiles is None or res.unit is None:
        return
    summary = f"live top-k: {res.unit}, {len(tiles)} of {win.request.live_topk_k}, " \
              f"{res.live_topk_frames} frames held"
    if tiles is win._live_shown:
        if panel.summary != summary:
            panel.set_summary(summary)
        return
    win._live_shown = tiles
    if not tiles:
        panel.show_message("live top-k: no frames yet", summary)
        return
    infos = [TileInfo(i, t.value, f"frame {t.frame_id}", len(tiles)) for i, t in enumerate(tiles)]
    panel.show_tiles([t.patch for t in tiles], infos, summary)


def open_topk_tile(win: MainWindow, index: int) -> None:
    """Show a tile's whole image (as the network saw it) with its receptive-field box, in a non-modal
    window; a store image is read on a background job, so a slow disk never stalls the live view."""
    if win.viewer is None:
        win.viewer = ImageViewer(win)
    viewer = win.viewer
    tiles = win._live_shown if win.live_topk_on else None
    if tiles:
        if not 0 <= index < len(tiles):
            return
        t = tiles[index]
        unit = win._painted.unit if win._painted is not None else win.request.unit
        win._viewer_key = None
        viewer.show_image(t.frame, t.box, f"live top-k: {unit} rank {index + 1}",
                          f"<b>{unit}</b> rank {index + 1} &nbsp;value {t.value:.4g} &nbsp;frame {t.frame_id}"
                          f" &nbsp;at ({t.y}, {t.x}) &nbsp;box {t.box}")
        return
    if win.store is None or not 0 <= index < len(win._topk_entries):
        return
    entry = win._topk_entries[index]
    store = win.store
    key = (id(store), entry.layer, entry.unit, entry.rank)
    win._viewer_key = key
    title = f"{win.store_name}: {entry.layer}:{entry.unit} rank {entry.rank + 1}"
    details = (f"<b>{entry.layer}:{entry.unit}</b> rank {entry.rank + 1} &nbsp;value {entry.value:.4g}"
               f" &nbsp;at ({entry.y}, {entry.x}) &nbsp;box {entry.box}<br>{entry.path}")
    viewer.show_image(None, None, title, details, missing="loading...")

    def shown(image: object) -> None:
        if win._viewer_key == key:
            viewer.show_image(image, entry.box, title, details,  # type: ignore[arg-type]
                              missing=f"image not found:\n{entry.path}")

    win.bridge.run_job(lambda: store.fitted(entry), shown,
                       lambda msg: viewer.show_image(None, None, title, details, missing=msg),
                       name="deepvis-topk-image")


def save_live_topk_dialog(win: MainWindow) -> None:
    path, _ = QFileDialog.getSaveFileName(win, "Save live top-k as store", "live-topk", "Top-k store (folder)")
    if path:
        win.save_live_topk(path)


def save_live_topk(win: MainWindow, path: str) -> None:
    """Save a copy of the live top-k as a STORE on a background job (capture goes on meanwhile)."""
    snap = win.worker.live_topk_snapshot()
    if snap is None or snap.image_count == 0:
        win.notify("live top-k: nothing to save yet (turn on live top-k and let some frames in)", "error")
        return
    model = {"name": win.vm.name, "weights": str(getattr(win.vm, "weights", ""))}
    win.status.showMessage(f"saving live top-k to {path}...")

    def done(out: object) -> None:
        win.messages.append(f"live top-k saved: {out}")
        win.status.showMessage(f"live top-k saved: {out} (File > Open top-k store to browse it)", 15000)

    win.bridge.run_job(lambda: snap.save(path, model=model), done,
                       lambda msg: win.notify(f"live top-k not saved: {msg}", "error"),
                       name="deepvis-save-topk")
