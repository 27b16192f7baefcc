"""Help: the shortcuts overlay (h or ?; it lists every feature's keys), the Help menu's documentation and about
box (versions and device: what a bug report needs)."""

from __future__ import annotations

import platform
from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from ..feature import Feature, Key, MenuItem
from ..widgets.help_overlay import HelpOverlay

# Keys the window itself handles (not a feature's): listed in the overlay after the features' keys.
WINDOW_KEYS = [
    ("Esc", "reset view, modes and freezes"),
    ("q", "quit"),
    ("Ctrl+S", "snapshot into ~/deepvis-snapshots/<time> (PNGs of window and panes + state JSON)"),
    ("Ctrl+Shift+S", "snapshot into a folder you choose"),
    ("Ctrl+O", "open an image, a video or a folder (or drop a file on the window)"),
    ("mouse", "hover a tile: unit and max; click: select; wheel / drag: zoom and pan the grid"),
    ("top-k tiles", "hover: rank, value and source; click: the whole image with the receptive-field box"),
]
DOCS = "https://github.com/deepvis (offline: the docs/ folder of the source tree)"


class HelpFeature(Feature):
    name = "help"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.overlay: HelpOverlay | None = None
        self.tools: list[str] = []  # the Tools menu's entries, as the overlay lists them

    def _ensure(self) -> HelpOverlay:
        if self.overlay is None:
            shortcuts = [(k.label, k.help) for f in self.ctx.features for k in f.keys() if k.help]
            self.overlay = HelpOverlay(self.ctx.top_widget, shortcuts + WINDOW_KEYS + self.menu_lines())
            self.ctx.top_widget.installEventFilter(self)  # the overlay follows the window's size
        return self.overlay

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt naming
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.Resize and self.visible:
            self.overlay.setGeometry(obj.rect())
        return False

    @property
    def visible(self) -> bool:
        return self.overlay is not None and self.overlay.isVisible()

    def toggle(self) -> None:
        self._ensure().toggle()

    def hide(self) -> None:
        if self.overlay is not None:
            self.overlay.hide()

    def reset(self) -> None:
        self.hide()

    def intercept_key(self) -> bool:
        """Any key but h closes the overlay (and does nothing else)."""
        if self.visible:
            self.hide()
            return True
        return False

    def menus_built(self, menus: dict) -> None:
        tools = menus.get("&Tools")
        if tools is not None:
            self.tools = [a.text().replace("&", "") for a in tools.actions() if a.text() and not a.isSeparator()]

    def menu_lines(self) -> list[tuple[str, str]]:
        """What the keys do not reach: the Tools menu's panels (and where they open)."""
        if not self.tools:
            return []
        names = ", ".join(t.split(" (")[0].rstrip(".\u2026") for t in self.tools)
        return [("Tools menu", f"{names}. Tool panels open as tabs under the grid (the inspector and Predictions "
                               f"stay in view) and compute only while shown")]

    def about_text(self) -> str:
        import numpy
        import PySide6
        import torch
        import torchvision

        from ...devices import thread_policy

        vm = self.ctx.vm
        policy = thread_policy()
        return (f"DeepVis — watch every layer of a CNN see, live.\n\nmodel: {vm.name} ({vm.weights} weights) on "
                f"{vm.device}\nPython {platform.python_version()}, torch {torch.__version__}, torchvision "
                f"{torchvision.__version__}, PySide6 {PySide6.__version__}, numpy {numpy.__version__}\n"
                f"CUDA available: {torch.cuda.is_available()}\nOpenMP wait policy: "
                f"{policy['omp_wait_policy'] or 'default'}; malloc: {policy['malloc']}")

    def docs_text(self) -> str:
        docs = Path(__file__).resolve().parents[3] / "docs"
        where = str(docs) if docs.is_dir() else DOCS
        return (f"Documentation: {where}\n\nREADME: features and set-up; docs/cli.md: every command; "
                f"docs/attribution.md, scan.md, optimize.md: how each view is computed.")

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Help", self.action("Shortcuts  (h)", self.toggle)),
                MenuItem("&Help", self.action("Documentation", lambda: QMessageBox.information(
                    self.ctx.top_widget, "DeepVis documentation", self.docs_text()))),
                MenuItem("&Help", self.action("About DeepVis", lambda: QMessageBox.about(
                    self.ctx.top_widget, "About DeepVis", self.about_text())))]

    def keys(self) -> list[Key]:
        return [Key(("h", "H", "?"), self.toggle, "h  or  ?", "show / hide this help")]
