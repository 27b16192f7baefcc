"""Keyboard shortcuts (like the old toolbox) and the help overlay that lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QWidget

from .inspector_pane import BACKPROP_MODES, BACKPROP_VIEWS

if TYPE_CHECKING:
    from .main_window import MainWindow

# (keys as shown, what they do); the main window's key handler implements exactly these.
SHORTCUTS: list[tuple[str, str]] = [
    ("arrows", "move the selected unit in the grid"),
    ("u / o", "previous / next layer"),
    ("f", "freeze / unfreeze the camera (the frozen frame keeps being analysed)"),
    ("b", "cycle backprop mode: guided, deconv, gradient, all, off"),
    ("m", "cycle backprop view: raw, gray, norm, normblur"),
    ("t / T", "boosts: toggle whole-layer / per-channel normalization; cycle gamma"),
    ("z", "zoom the grid to the selected unit (again: whole grid)"),
    ("p", "pattern mode: the layer's cached optimized images instead of live activations"),
    ("x", "freeze / unfreeze the explained unit while browsing layers"),
    ("h  or  ?", "show / hide this help"),
    ("Esc", "reset view, modes and freezes"),
    ("q", "quit"),
    ("Ctrl+S", "snapshot into ~/deepvis-snapshots/<time> (PNGs of window and panes + state JSON)"),
    ("Ctrl+Shift+S", "snapshot into a folder you choose"),
    ("Ctrl+O", "open an image, a video or a folder (or drop a file on the window)"),
    ("mouse", "hover a tile: unit and max; click: select; wheel / drag: zoom and pan the grid"),
    ("top-k tiles", "hover: rank, value and source; click: the whole image with the receptive-field box"),
]


class HelpOverlay(QWidget):
    """A translucent panel over the whole window; any key or click closes it."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, False)
        self.hide()

    def toggle(self) -> None:
        if self.isVisible():
            self.hide()
        else:
            self.setGeometry(self.parentWidget().rect())
            self.raise_()
            self.show()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.hide()
        event.accept()

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0, 190))
        title = QFont(self.font())
        title.setPointSizeF(title.pointSizeF() * 1.6)
        title.setBold(True)
        body = QFont(self.font())
        body.setPointSizeF(body.pointSizeF() * 1.15)
        p.setFont(body)
        line = p.fontMetrics().height() * 1.45
        key_w = 130
        desc_w = min(640, self.width() - key_w - 40)
        h = line * (len(SHORTCUTS) + 2.5)
        x0 = max(10, (self.width() - key_w - desc_w) / 2)
        y0 = max(10, (self.height() - h) / 2)
        p.fillRect(QRectF(x0 - 20, y0 - 16, key_w + desc_w + 40, h + 24), QColor(28, 30, 38, 235))
        p.setFont(title)
        p.setPen(QColor(255, 214, 10))
        p.drawText(QRectF(x0, y0, key_w + desc_w, line * 1.5), Qt.AlignmentFlag.AlignLeft, "DeepVis shortcuts")
        p.setFont(body)
        y = y0 + line * 1.8
        for keys, desc in SHORTCUTS:
            p.setPen(QColor(255, 214, 10))
            p.drawText(QRectF(x0, y, key_w, line), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, keys)
            p.setPen(QColor(235, 235, 235))
            p.drawText(QRectF(x0 + key_w, y, desc_w, line), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       desc)
            y += line
        p.end()


def handle_key(win: MainWindow, event) -> bool:
    """The toolbox shortcuts (see keys.SHORTCUTS); returns True when the key was one of them."""
    key = event.key()
    mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
    if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
               | Qt.KeyboardModifier.MetaModifier):
        return False
    text = event.text()
    if win.help.isVisible() and key not in (Qt.Key.Key_H, Qt.Key.Key_Question):
        win.help.hide()
        return True
    arrows = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0), Qt.Key.Key_Up: (0, -1),
              Qt.Key.Key_Down: (0, 1)}
    if key in arrows:
        win.move_selection(*arrows[key])
    elif text == "u":
        win.step_layer(-1)
    elif text == "o":
        win.step_layer(1)
    elif text in ("f", "F"):
        win.toggle_camera_freeze()
    elif text in ("b", "B"):
        step = 1 if text == "b" else -1
        win.set_backprop_mode(BACKPROP_MODES[(BACKPROP_MODES.index(win.backprop_mode) + step)
                                             % len(BACKPROP_MODES)])
    elif text in ("m", "M"):
        step = 1 if text == "m" else -1
        win.set_backprop_view(BACKPROP_VIEWS[(BACKPROP_VIEWS.index(win.backprop_view) + step)
                                             % len(BACKPROP_VIEWS)])
    elif text == "t":
        win.cycle_boost(1)
    elif text == "T":
        win.cycle_boost(-1)
    elif text in ("p", "P"):
        win.set_pattern_mode(not win.pattern_on)
    elif text in ("z", "Z"):
        unit = win.request.unit
        win.grid_pane.toggle_zoom(unit.channel if unit is not None and unit.layer == win.layer
                                  else None)
    elif text in ("x", "X"):
        win.set_unit_frozen(not win.unit_frozen)
    elif text in ("h", "H", "?"):
        win.help.toggle()
    elif key == Qt.Key.Key_Escape:
        win.reset()
    elif text in ("q", "Q"):
        win.close()
    else:
        return False
    return True


class KeyFilter(QObject):
    """Application-wide filter so the shortcuts work whichever pane has focus (the layer list would
    otherwise eat the arrows); keys aimed at other windows (file dialogs) pass through."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if event.type() != QEvent.Type.KeyPress or not isinstance(obj, QWidget):
            return False
        if obj.window() is not self.window:
            return False
        from PySide6.QtWidgets import QComboBox

        if isinstance(obj, QComboBox) and obj.view().isVisible():
            return False
        return self.window.handle_key(event)
