"""Application-wide key routing: the shortcuts work whichever pane has focus (the layer list would otherwise eat the
arrows); keys aimed at other windows (file dialogs) or an open combo box pass through."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QComboBox, QWidget


class KeyFilter(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if event.type() != QEvent.Type.KeyPress or not isinstance(obj, QWidget):
            return False
        if obj.window() is not self.window:
            return False
        if isinstance(obj, QComboBox) and obj.view().isVisible():
            return False
        return self.window.handle_key(event)
