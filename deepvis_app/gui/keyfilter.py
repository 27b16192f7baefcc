"""Application-wide key routing: the shortcuts work whichever pane has focus (the layer list would otherwise eat the
arrows); keys aimed at other windows (file dialogs), an open combo box or a text field (a class search box, a
spin box: typing "tabby" must not toggle t and b) pass through. Esc still resets from a text field."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit, QTextEdit, QWidget

TEXT_FIELDS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit)


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
        if isinstance(obj, TEXT_FIELDS) and obj.hasFocus() and event.key() != Qt.Key.Key_Escape:
            return False  # typed into the field
        return self.window.handle_key(event)
