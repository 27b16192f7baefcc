"""Open in atlas: once a site is chosen (and remembered in the settings), the inspector opens the selected unit's
page, `SITE/<layer's folder>/<unit>.html` as the site's atlas.json names the folder; a folder that is not an atlas,
or a unit without a page, is said in one line and opens nothing."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, QUrl

from deepvis_app.gui.features import atlas_link
from deepvis_app.values import Unit, ViewRequest


def _site(tmp_path):
    site = tmp_path / "site"
    (site / "_blocks.3").mkdir(parents=True)
    (site / "_blocks.3" / "5.html").write_text("<html>unit 5</html>")
    (site / "_swish_at_1").mkdir()
    (site / "_swish_at_1" / "7.html").write_text("<html>unit 7</html>")
    (site / "atlas.json").write_text(json.dumps({
        "generator": "deepvis-atlas", "version": 1, "model": {"name": "efficientnet_lite0", "weights": "random"},
        "layers": [{"name": "_blocks.3", "slug": "_blocks.3", "units": 40},
                   {"name": "_swish@1", "slug": "_swish_at_1", "units": 1280}]}))
    return site


class _Opened:
    def __init__(self) -> None:
        self.urls: list[QUrl] = []

    def openUrl(self, url: QUrl) -> bool:  # noqa: N802 - Qt's name
        self.urls.append(url)
        return True


def test_open_in_atlas_opens_the_units_page(qtbot, make_window, tmp_path, monkeypatch):
    opened = _Opened()
    monkeypatch.setattr(atlas_link, "QDesktopServices", opened)
    win = make_window("demo", ViewRequest(layer="_blocks.3"))
    feat = win.feature("atlas_link")
    assert not feat.row.isVisibleTo(win)  # no atlas: nothing offered
    assert not feat.set_site(str(tmp_path))  # not an atlas: refused, said in the banner
    assert "is not an atlas" in win.ctx.last_error and feat.site is None
    site = _site(tmp_path)
    assert feat.set_site(str(site))
    assert win.settings.value(atlas_link.SETTINGS_SITE) == str(site.resolve())
    win.state.update(unit=Unit("_blocks.3", 5))
    assert feat.row.isVisibleTo(win) and feat.button.isEnabled() and feat.button.text() == "open unit 5 in atlas"
    qtbot.mouseClick(feat.button, Qt.MouseButton.LeftButton)
    assert opened.urls == [QUrl.fromLocalFile(str(site.resolve() / "_blocks.3" / "5.html"))]
    win.state.update(unit=Unit("_swish@1", 7), unit_frozen=True)  # the layer's folder as atlas.json names it
    qtbot.mouseClick(feat.button, Qt.MouseButton.LeftButton)
    assert opened.urls[-1] == QUrl.fromLocalFile(str(site.resolve() / "_swish_at_1" / "7.html"))
    win.state.update(unit=Unit("_blocks.3", 6))  # no page for this unit
    assert not feat.button.isEnabled() and "no page for unit 6" in feat.note.text()
    feat.open_unit()
    assert len(opened.urls) == 2 and "no page for unit 6" in win.ctx.last_error


def test_the_chosen_atlas_is_remembered(qtbot, make_window, tmp_path):
    site = _site(tmp_path)
    win = make_window("demo", ViewRequest(layer="_blocks.3"))
    win.settings.setValue(atlas_link.SETTINGS_SITE, str(site))
    win.settings.sync()
    second = make_window("demo", ViewRequest(layer="_blocks.3"))  # same settings file: a later session
    assert second.feature("atlas_link").site == site.resolve()
