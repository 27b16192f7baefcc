"""What a user sees of the window's texts: every visible label, button and image placeholder whose text does not
fit the room it has (cut through its letters, or a wrapped text taller than its label)."""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractButton, QLabel, QWidget

from deepvis_app.gui.widgets.canvas import ImageCanvas
from deepvis_app.gui.widgets.combo import ElidedCombo
from deepvis_app.gui.widgets.elided_label import ElidedLabel


def on_screen(w: QWidget) -> bool:
    """Visible and not scrolled or covered away entirely."""
    return w.isVisible() and not w.visibleRegion().isEmpty() and w.width() > 0 and w.height() > 0


def cut_texts(window: QWidget) -> list[str]:
    """'Class "text"' for every visible text of `window` that is cut."""
    cut = []
    for label in window.findChildren(QLabel):
        if not on_screen(label) or not label.text().strip():
            continue
        if isinstance(label, ElidedLabel):
            if label.elided():
                cut.append(f'ElidedLabel "{label.text()}" (shortened)')
            continue
        if label.wordWrap():
            need = label.heightForWidth(label.width())
            if need > label.height() + 1:
                cut.append(f'QLabel "{label.text()}" (needs {need} px height, has {label.height()})')
        elif label.sizeHint().width() > label.width() + 1:
            cut.append(f'QLabel "{label.text()}" (needs {label.sizeHint().width()} px, has {label.width()})')
    for button in window.findChildren(QAbstractButton):
        if on_screen(button) and button.text() and button.sizeHint().width() > button.width() + 1:
            cut.append(f'{type(button).__name__} "{button.text()}" ({button.width()} < {button.sizeHint().width()})')
    for combo in window.findChildren(ElidedCombo):
        if on_screen(combo) and combo.elided():
            cut.append(f'combo "{combo.currentText()}" (shortened)')
    for canvas in window.findChildren(ImageCanvas):
        if not on_screen(canvas):
            continue
        if not canvas.has_image and canvas.placeholder and canvas.placeholder_layout()[1] != canvas.placeholder:
            cut.append(f'placeholder "{canvas.placeholder}" (shortened)')
        for text, top in ((canvas.caption, True), (canvas.footer, False)):
            if text and canvas.has_image and not canvas.rect().toRectF().contains(canvas.badge_layout(text, top)[0]):
                cut.append(f'badge "{text}" (outside its canvas)')
    return cut
