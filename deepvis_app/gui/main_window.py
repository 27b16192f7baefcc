"""The DeepVis main window: composition only. It creates the app state, the live session and the context, builds
every registered feature, and places what they return: docks and sections (`Panel`), menus (`MenuItem`), keys
(`Key`) and status-bar widgets. It shows messages in the banner and status line, remembers the layout, and
routes Esc (reset), q (quit) and dropped files. Behaviour lives in `gui/features/`, state in `deepvis_app.state`.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QVBoxLayout, QWidget

from ..devices import settle_objects
from ..sources import FrameSource
from ..state import state_from_request
from ..values import ViewRequest
from ..zoo import VisModel
from .context import AppContext
from .feature import MENUS, TOOLS, Feature, Panel
from .features import FEATURES
from .keyfilter import KeyFilter
from .live import LiveSession
from .widgets.banner import Banner
from .widgets.scroll import FitScroll
from .widgets.style import STYLE
from .window_layout import LayoutKeeper

AREAS = {"left": Qt.DockWidgetArea.LeftDockWidgetArea, "right": Qt.DockWidgetArea.RightDockWidgetArea,
         "bottom": Qt.DockWidgetArea.BottomDockWidgetArea}


class MainWindow(QMainWindow):
    def __init__(self, model: VisModel, source: FrameSource, request: ViewRequest, *, fps: float | None = None,
                 mirror: bool = False, device: str = "auto", store: str | None = None,
                 settings: QSettings | None = None, notices: list[str] | None = None,
                 worker_threads: int | None = None) -> None:
        super().__init__()
        self.setWindowTitle("DeepVis")
        self.setStyleSheet(STYLE)
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        # the side columns run the full height: the bottom area (the tools) lies under the grid only
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.settings = settings if settings is not None else QSettings("DeepVis", "deepvis")
        self.state = state_from_request(request)
        self.state.update(mirror=mirror, store=store)
        self.live = LiveSession(self.state, model, fps=fps, device=device, worker_threads=worker_threads,
                                parent=self)
        self.ctx = ctx = AppContext(self.state, self.live, self.settings, parent=self)
        ctx.top_widget = self
        self.banner = Banner()
        ctx.events.message.connect(self._show_message)
        ctx.show_panel.connect(self._raise_dock)
        self.features: dict[str, Feature] = {}
        for cls in FEATURES:
            self.features[cls.name] = cls(ctx)
        ctx.features = list(self.features.values())
        self.docks: dict[str, QDockWidget] = {}
        self.pinned: set[str] = set()  # dock keys never covered by a tool (Predictions)
        self.tools: list[str] = []  # the tool docks, in one tab group
        self._place_panels()
        self.menus = self._build_menus()
        for feature in ctx.features:
            feature.menus_built(self.menus)
            for widget in feature.status_widgets():
                self.statusBar().addPermanentWidget(widget)
        self._keys = {k: key.handler for f in ctx.features for key in f.keys() for k in key.keys}
        self.live.model_changed.connect(self._title)
        self.live.source_changed.connect(self._title)
        self.live.start(source)
        self.layout_keeper = LayoutKeeper(self, self.settings, self.docks, arrange=self.arrange_docks)
        self.layout_keeper.restore()
        for note in notices or []:
            ctx.notify(note, "info")
        settle_objects()  # the model and every widget out of the garbage collector's walks (see devices)

    # ------------------------------------------------------------------ composition
    def feature(self, name: str) -> Feature:
        return self.features[name]

    def _place_panels(self) -> None:
        panels: list[Panel] = [p for f in self.ctx.features for p in f.panels()]
        hosts: dict[str, QWidget] = {}
        for p in panels:
            if p.area == "central":
                central = QWidget()
                lay = QVBoxLayout(central)
                lay.setContentsMargins(0, 0, 0, 0)
                lay.setSpacing(0)
                lay.addWidget(self.banner)
                lay.addWidget(p.widget, 1)
                self.setCentralWidget(central)
            elif p.area in AREAS:
                dock = QDockWidget(p.title, self)
                dock.setObjectName(f"dock_{p.key}")
                if p.pinned:
                    self.pinned.add(p.key)
                tool = p.tab_with == TOOLS or p.tab_with in self.pinned
                dock.setWidget(FitScroll(p.widget) if tool else p.widget)
                if tool:
                    self._join_tools(p.key, dock)
                else:
                    self.addDockWidget(AREAS[p.area], dock)
                if p.tab_with in self.docks and not tool:
                    self.tabifyDockWidget(self.docks[p.tab_with], dock)
                dock.setVisible(p.visible)
                self.docks[p.key] = dock
            hosts[p.key] = p.widget
            if not p.area.startswith("in:"):
                self.ctx.panel_widgets[p.key] = p.widget
        for p in panels:
            if p.area.startswith("in:"):
                hosts[p.area[3:]].add_section(p.widget, **p.place)

    def arrange_docks(self) -> None:
        """The default dock sizes, in proportion to the window (called once it has its size): the grid keeps
        about 40% of the width on a small screen as on a big one."""
        w, h = max(self.width(), 640), max(self.height(), 480)
        left = [d for k, d in self.docks.items() if self.dockWidgetArea(d) == AREAS["left"] and not d.isHidden()]
        right = [d for k, d in self.docks.items() if self.dockWidgetArea(d) == AREAS["right"] and not d.isHidden()]
        if len(left) >= 2:
            top = min(300, int(h * 0.4))
            self.resizeDocks(left[:2], [top, h - top], Qt.Orientation.Vertical)
        if len(right) >= 2:
            low = min(240, max(170, int(h * 0.26)))
            self.resizeDocks(right[:2], [h - low, low], Qt.Orientation.Vertical)
        if left and right:
            self.resizeDocks([left[0], right[0]], [min(290, int(w * 0.19)), min(600, int(w * 0.4))],
                             Qt.Orientation.Horizontal)

    def _join_tools(self, key: str, dock: QDockWidget) -> None:
        """A tool's dock goes to the tool group under the grid (the bottom area spans only the grid's column):
        the grid is about square and leaves room below it, while the inspector and Predictions keep theirs.
        The first tool starts the group, the others are tabs of it."""
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        if self.tools:
            self.tabifyDockWidget(self.docks[self.tools[0]], dock)
        self.tools.append(key)

    def _build_menus(self) -> dict:
        bar = self.menuBar()
        menus = {name: bar.addMenu(name) for name in MENUS}
        for feature in self.ctx.features:
            for item in feature.menu_items():
                menu = menus[item.menu]
                if item.action is None:
                    menu.addSeparator()
                elif hasattr(item.action, "menuAction"):
                    menu.addMenu(item.action)
                else:
                    menu.addAction(item.action)
        menus["&File"].addSeparator()
        menus["&File"].addAction("Quit", QKeySequence("Ctrl+Q"), self.close)
        view = menus["&View"]
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        view.addSeparator()
        view.addAction("Reset layout", self.reset_layout)
        for menu in menus.values():
            if menu.isEmpty():
                bar.removeAction(menu.menuAction())
        return menus

    def _raise_dock(self, key: str) -> None:
        dock = self.docks.get(key)
        if dock is None:
            return
        dock.show()
        dock.raise_()
        if key in self.tools:  # a tool opened from the menu gets room: about 40% of the grid's column
            self.resizeDocks([dock], [int(self.height() * 0.4)], Qt.Orientation.Vertical)

    def _title(self, *_args) -> None:
        src = self.live.source.name if self.live.source is not None else "no source"
        self.setWindowTitle(f"DeepVis - {self.ctx.vm.title} - {src}")

    def _show_message(self, text: str, level: str, seconds: float) -> None:
        self.banner.show_message(text, level, seconds or None)
        self.statusBar().showMessage(text, 10000)

    # ------------------------------------------------------------------ keys, drops, reset
    def handle_key(self, event) -> bool:
        """The shortcuts the features registered; True when the key was one of them."""
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                   | Qt.KeyboardModifier.MetaModifier):
            return False
        key, text = event.key(), event.text()
        handler = self._keys.get(text) or self._keys.get(key)
        if text not in ("h", "H", "?") and any(f.intercept_key() for f in self.ctx.features):
            return True
        if handler is not None:
            handler()
        elif key == Qt.Key.Key_Escape:
            self.reset()
        elif text in ("q", "Q"):
            self.close()
        else:
            return False
        return True

    def reset(self) -> None:
        """Esc: every feature back to its defaults (zoom, boosts, modes, freezes); the layer and unit stay."""
        for feature in self.ctx.features:
            feature.reset()

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if any(f.accepts_drop(files) for f in self.ctx.features):
            event.acceptProposedAction()

    def reset_layout(self) -> None:
        self.layout_keeper.reset()

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop jobs and threads (idempotent); called from closeEvent and by tests."""
        if self.live.closing:
            return
        for feature in self.ctx.features:
            feature.shutdown()
        self.ctx.jobs.cancel_all(wait_ms=5000)
        self.live.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.layout_keeper.save()
        self.shutdown()
        self.settings.sync()
        super().closeEvent(event)


__all__ = ["KeyFilter", "MainWindow"]  # app.py and the tests take both from here
