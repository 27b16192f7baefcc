"""A search box over the model's class names: type part of a name (or an index), pick from the completions.

Used wherever a panel needs a target class (adversarial target, occlusion class, ...). Emits `chosen(index)`.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCompleter, QLineEdit


class ClassPicker(QLineEdit):
    chosen = Signal(int)

    def __init__(self, categories: list[str] | None = None, placeholder: str = "target class (type to search)",
                 parent=None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setClearButtonEnabled(True)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 16))
        self.categories: list[str] = []
        self.index: int | None = None
        self.returnPressed.connect(self._commit)
        self.set_categories(categories or [])

    def set_categories(self, categories: list[str]) -> None:
        self.categories = list(categories)
        items = [f"{name}  [{i}]" for i, name in enumerate(self.categories)]
        completer = QCompleter(items, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setMaxVisibleItems(12)
        completer.activated.connect(lambda _text: self._commit())
        self.setCompleter(completer)

    def lookup(self, text: str) -> int | None:
        """The class meant by `text`: "name  [i]", an index, an exact name, or the only name containing it."""
        text = text.strip()
        if text.endswith("]") and "[" in text:
            text = text[text.rindex("[") + 1:-1]
        if text.isdigit() and int(text) < len(self.categories):
            return int(text)
        low = text.lower()
        exact = [i for i, n in enumerate(self.categories) if n.lower() == low]
        if exact:
            return exact[0]
        partial = [i for i, n in enumerate(self.categories) if low and low in n.lower()]
        return partial[0] if len(partial) == 1 else None

    def set_index(self, index: int) -> None:
        """Show and choose class `index` (e.g. a class clicked in the predictions)."""
        if 0 <= index < len(self.categories):
            self.index = index
            self.setText(f"{self.categories[index]}  [{index}]")
            self.setCursorPosition(0)  # the name, not the index, when the box is narrow
            self.chosen.emit(index)

    def _commit(self) -> None:
        idx = self.lookup(self.text())
        if idx is None:
            self.setStyleSheet("border: 1px solid #ff6961;")
            self.setToolTip("no single class matches: keep typing or pick from the list")
            return
        self.setStyleSheet("")
        self.setToolTip("")
        self.set_index(idx)
