"""The contract between the window and a feature: a controller that owns its state, job and widgets, and tells
the window what to place where. The window (composition only) builds docks, menus, keys and the status bar from
what the registered features return; features talk to each other only through the app state and `AppEvents`.

Adding a feature = one module in `gui/features/` with a `Feature` subclass + one line in `features.FEATURES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QWidget

from .context import AppContext

MENUS = ("&File", "&Source", "&Model", "&View", "&Tools", "&Help")
TOOLS = "tools"  # `Panel.tab_with` of a tool panel: the tools share one place under the grid


@dataclass
class Panel:
    """A widget the window places: `area` is "left", "right", "bottom", "central", or "in:<key>" to go inside
    another panel whose widget has `add_section(widget, **place)` (e.g. the inspector's grid of sections)."""

    key: str
    title: str
    widget: QWidget
    area: str = "right"
    place: dict = field(default_factory=dict)  # for "in:<key>": row, col, rowspan, colspan
    visible: bool = True  # shown by default (hidden panels are one click away in the View menu)
    # a dock key: share its place as a tab. TOOLS (or the key of a pinned dock): the tool group under the grid
    # (whatever `area` says), tabbed with the other tools; its content scrolls when the dock is smaller than the
    # panel, so opening a tool never makes the window bigger than the screen nor covers a pinned dock
    tab_with: str = ""
    pinned: bool = False  # never covered by a tab, keeps the room its minimum size needs (Predictions' top 5)


@dataclass
class MenuItem:
    """An action in one of `MENUS` (None: a separator)."""

    menu: str
    action: QAction | QMenu | None


@dataclass
class Key:
    """A keyboard shortcut: `text` (as typed, e.g. "u", "T") or a Qt key code; `help` goes in the help overlay."""

    keys: tuple[str | int, ...]
    handler: Callable[[], None]
    label: str = ""
    help: str = ""


class Feature(QObject):
    """Base class of a feature controller. Subclasses build their widgets and subscribe in `__init__`."""

    name: ClassVar[str] = ""

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        self.ctx = ctx

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return []

    def menu_items(self) -> list[MenuItem]:
        return []

    def keys(self) -> list[Key]:
        return []

    def status_widgets(self) -> list[QWidget]:
        return []

    def menus_built(self, menus: dict[str, QMenu]) -> None:
        """Called once the menu bar exists (e.g. to refresh a menu when it opens)."""

    def intercept_key(self) -> bool:
        """Called before any shortcut runs: return True to swallow the key (e.g. a help overlay closing)."""
        return False

    def accepts_drop(self, paths: list[str]) -> bool:
        """A file dropped on the window: return True when this feature took it."""
        return False

    # -- what snapshots and Esc use
    def snapshot_state(self) -> dict:
        """JSON-friendly facts for `state.json` of a snapshot."""
        return {}

    def snapshot_images(self) -> dict:
        """name -> RGB uint8 image written into a snapshot."""
        return {}

    def reset(self) -> None:
        """Esc: back to this feature's defaults."""

    def shutdown(self) -> None:
        """The window closes: cancel jobs, close windows."""

    # -- helpers
    def show_panel(self, key: str) -> None:
        """Show and raise this feature's dock `key` (e.g. from its Tools menu entry)."""
        self.ctx.show_panel.emit(key)

    def action(self, text: str, slot: Callable[[], None], *, shortcut: object = None, checkable: bool = False,
               tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.setCheckable(checkable)
        if tip:
            act.setToolTip(tip)
            act.setStatusTip(tip)
        act.triggered.connect(lambda _checked=False: slot())
        return act
