"""Where the window's docks go between runs: the saved geometry and dock layout, unless they no longer fit the
screen (a layout squeezed onto a small screen, or saved on a bigger one, is never restored), and a reset to the
default layout (tool panels hidden again)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QDockWidget, QMainWindow

DEFAULT_SIZE = (1500, 920)
STATE_VERSION = 2  # 2: tools in their own tab group (a layout saved with tools tabbed over Predictions is not used)


def fit_to_screen(window: QMainWindow) -> None:
    """The default size, shrunk to the screen's available area."""
    window.resize(*DEFAULT_SIZE)
    screen = window.screen().availableGeometry() if window.screen() is not None else None
    if screen is not None and screen.width() > 200:
        window.resize(min(DEFAULT_SIZE[0], int(screen.width() * 0.96)),
                      min(DEFAULT_SIZE[1], int(screen.height() * 0.94)))


class LayoutKeeper:
    def __init__(self, window: QMainWindow, settings: QSettings, docks: dict[str, QDockWidget],
                 arrange: Callable[[], None] | None = None) -> None:
        self.window, self.settings, self.docks = window, settings, docks
        self.arrange = arrange  # the window's default dock sizes for its size now
        fit_to_screen(window)
        if arrange is not None:
            arrange()
        self.default_state = window.saveState(STATE_VERSION)
        self.default_visible = {key: not dock.isHidden() for key, dock in docks.items()}

    def restore(self) -> None:
        """The saved layout, unless it no longer fits this screen (then the default one)."""
        w = self.window
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        screen = w.screen().availableGeometry() if w.screen() is not None else None
        if geometry is not None:
            w.restoreGeometry(geometry)
            if screen is not None and (w.width() > screen.width() or w.height() > screen.height()):
                fit_to_screen(w)  # saved on a bigger screen: start from the default layout
                if self.arrange is not None:
                    self.arrange()
                return
        if state is not None:
            w.restoreState(state, STATE_VERSION)  # refuses a state saved by an older layout

    def save(self) -> None:
        self.settings.setValue("window/geometry", self.window.saveGeometry())
        self.settings.setValue("window/state", self.window.saveState(STATE_VERSION))

    def reset(self) -> None:
        self.window.restoreState(self.default_state, STATE_VERSION)
        for key, dock in self.docks.items():
            dock.setVisible(self.default_visible.get(key, True))
