"""What every feature controller gets: the app state, the events between features, the live session, the job
runner, and a way to tell the user something. Features hold this and nothing of each other.

Facts about the model (channels of a layer, the class layer, its title) are the model's own: features ask
`ctx.vm` (`vm.channels(layer)`, `vm.is_class_layer(layer)`, `vm.class_layer`, `vm.title`); the shown layer and
the selected unit are the state's (`ctx.state.layer`, `ctx.state.unit`)."""

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
        """The model the live worker runs (owned by the live session; a switch is announced on
        `live.model_changed`)."""
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
