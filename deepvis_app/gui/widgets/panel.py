"""A panel that says when it becomes visible, so a tool computes only while someone is looking at it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget


class ToolPanel(QWidget):
    shown = Signal()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().showEvent(event)
        self.shown.emit()
