"""Combo boxes for toolbars that must fit small screens."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QStylePainter


class ElidedCombo(QComboBox):
    """A QComboBox whose current text ends in an ellipsis when the box is squeezed below it (Qt clips it
    mid-letter): a narrow window shows "whole l..." rather than "whole l", and the popup the full items."""

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QStylePainter(self)
        opt, width = self._label_option()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
        opt.currentText = self.fontMetrics().elidedText(opt.currentText, Qt.TextElideMode.ElideRight, width)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)

    def elided(self) -> bool:
        """True when the current text does not fit and is shown shortened."""
        return self.fontMetrics().horizontalAdvance(self.currentText()) > self._label_option()[1]

    def _label_option(self) -> tuple[QStyleOptionComboBox, int]:
        """The style option of this box and the width its label may take."""
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        return opt, field.width()


def compact_combo(items: list[str] | tuple[str, ...] = (), *, chars: int = 6) -> ElidedCombo:
    """A combo that may shrink to about `chars` characters (text elided) so toolbars fit small screens."""
    box = ElidedCombo()
    box.addItems(list(items))
    # the size hint stays the full text; an explicit minimum width lets layouts squeeze it below that
    box.setMinimumWidth(box.fontMetrics().horizontalAdvance("x" * chars) + 28)
    return box
