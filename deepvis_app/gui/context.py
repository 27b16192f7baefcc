"""What every feature controller gets: the app state, the events between features, the live session, the job
runner, and a way to tell the user something. Features hold this and nothing of each other."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from PySide6.QtCore import QObject, QSettings, Signal

from ..state import AppEvents, AppState
from ..zoo import VisModel
from .jobs import Jobs
from .live import LiveSession

MESSAGES_KEPT = 200


@dataclass
class Message:
    text: str
    level: str
    t: float


class AppContext(QObject):
    show_panel = Signal(str)  # a feature asks the window to show and raise one of its docks

    def __init__(self, state: AppState, live: LiveSession, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.events = AppEvents()
        self.live = live
        self.jobs = Jobs(self)
        self.settings = settings
        self.messages: deque[Message] = deque(maxlen=MESSAGES_KEPT)  # bounded: the app runs for hours
        self.last_error = ""
        # Set by the window once it is composed (read-only for features): the top-level widget (dialog parent,
        # snapshots), the features in registry order (help, snapshots) and the placed panels by key (snapshots).
        self.top_widget = None
        self.features: list = []
        self.panel_widgets: dict = {}
        live.status.connect(lambda text, level: self.notify(text, level))

    @property
    def vm(self) -> VisModel:
        """The model the live worker runs."""
        return self.live.vm

    def notify(self, text: str, level: str = "info", seconds: float = 0.0) -> None:
        """Tell the user (banner + status line); errors are also kept as `last_error`."""
        self.messages.append(Message(text, level, time.time()))
        if level == "error":
            self.last_error = text
        self.events.message.emit(text, level, float(seconds or 0.0))

    def message_texts(self, last: int | None = None) -> list[str]:
        texts = [m.text for m in self.messages]
        return texts if last is None else texts[-last:]

    # -- model facts every feature asks for
    def model_title(self) -> str:
        """The model's title as users should read it: "random weights" instead of the weights it was trained on."""
        vm = self.vm
        title = vm.spec.title
        if str(vm.weights) == "random":
            base = title.split(" (")[0] if title.endswith(")") else title
            return f"{base} (random weights)"
        return title

    def channels(self, layer: str) -> int:
        shape = self.vm.info(layer).shape
        if not shape:
            return 1
        return shape[0] if len(shape) != 2 else shape[1]

    def is_class_layer(self, layer: str) -> bool:
        vm = self.vm
        shape = vm.info(layer).shape
        return len(shape) == 1 and shape[0] == len(vm.categories) and shape[0] > 0

    def class_layer(self) -> str | None:
        """The layer whose units are the classes (the logits), if the model has one."""
        for name in reversed(self.vm.layers):
            if self.is_class_layer(name):
                return name
        return None
