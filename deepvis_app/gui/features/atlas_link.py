"""Open in atlas: once the user has pointed the window at a site `deepvis atlas` wrote (Tools > Open atlas...,
remembered in the app's settings), the unit inspector offers the selected unit's page (`SITE/<layer>/<unit>.html`,
the layer's folder as the site's `atlas.json` names it) in the system's browser."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from ..feature import Feature, MenuItem, Panel

SETTINGS_SITE = "atlas/site"


def read_site(folder: str | Path) -> tuple[dict[str, str], str] | None:
    """(layer name -> its folder, the model's name) of an atlas site; None when `folder` is not one."""
    from ...atlas.job import MARKER, is_site

    path = Path(folder)
    if not is_site(path):
        return None
    data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    layers = {str(e["name"]): str(e["slug"]) for e in data.get("layers", []) if isinstance(e, dict)
              and "name" in e and "slug" in e}
    model = data.get("model")
    return layers, str(model.get("name", "")) if isinstance(model, dict) else str(model or "")


class AtlasLinkFeature(Feature):
    name = "atlas_link"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.site: Path | None = None
        self.layers: dict[str, str] = {}
        self.model = ""
        self.button = QPushButton("open in atlas")
        self.button.clicked.connect(self.open_unit)
        self.note = QLabel("")
        self.note.setStyleSheet("color: #a9b0c0;")
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.row = QWidget()
        lay = QHBoxLayout(self.row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.button)
        lay.addWidget(self.note, 1)
        self.row.hide()
        ctx.state.events.unit.connect(lambda *_: self._sync())
        ctx.live.model_changed.connect(lambda _vm: self._sync())
        saved = ctx.settings.value(SETTINGS_SITE)
        if saved:
            self.set_site(str(saved), quiet=True)

    def set_site(self, folder: str, *, quiet: bool = False) -> bool:
        """Use the atlas at `folder` (remembered for the next session); False (and a banner) when it is not one."""
        found = read_site(folder)
        if found is None:
            if not quiet:
                self.ctx.notify(f"{folder} is not an atlas: no atlas.json from `deepvis atlas` in it", "error")
            return False
        self.site = Path(folder).resolve()
        self.layers, self.model = found
        self.ctx.settings.setValue(SETTINGS_SITE, str(self.site))
        self._sync()
        return True

    def choose_site(self) -> None:
        start = str(self.site) if self.site is not None else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.ctx.top_widget, "Open an atlas (a folder `deepvis atlas` "
                                                                       "wrote)", start)
        if folder and self.set_site(folder):
            self.ctx.notify(f"atlas {self.site} ({len(self.layers)} layers of {self.model or 'a model'}): the "
                            "unit inspector opens the selected unit's page", "info", 6)

    def unit_page(self) -> tuple[Path | None, str]:
        """(the selected unit's page, "") or (None, why there is none)."""
        unit = self.ctx.state.unit
        if self.site is None:
            return None, "no atlas open (Tools > Open atlas...)"
        if unit is None:
            return None, "select a unit"
        slug = self.layers.get(unit.layer)
        if slug is None:
            return None, f"{unit.layer} is not in this atlas"
        page = self.site / slug / f"{unit.channel}.html"
        if not page.is_file():
            return None, f"the atlas has no page for unit {unit.channel} of {unit.layer}"
        return page, ""

    def open_unit(self) -> None:
        page, why = self.unit_page()
        if page is None:
            self.ctx.notify(why, "error")
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(page))):
            self.ctx.notify(f"could not open {page} in a browser", "error")

    def _sync(self) -> None:
        self.row.setVisible(self.site is not None)
        if self.site is None:
            return
        page, why = self.unit_page()
        unit = self.ctx.state.unit
        self.button.setEnabled(page is not None)
        self.button.setText(f"open unit {unit.channel} in atlas" if page is not None else "open in atlas")
        other = self.model and self.model != self.ctx.vm.name
        self.note.setText(why or (f"atlas of {self.model}, not the live model" if other else ""))
        self.button.setToolTip(str(page) if page is not None else why)

    def panels(self) -> list[Panel]:
        return [Panel("atlas_link", "Atlas", self.row, area="in:inspector", place={"row": 3, "col": 0, "colspan": 3})]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Open atlas...", self.choose_site,
                                               tip="a site `deepvis atlas` wrote: the inspector then opens the "
                                                   "selected unit's page"))]
