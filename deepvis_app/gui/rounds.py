"""Results of several background jobs that belong together (occlusion, saliency, cut-out) shown as one set from one
frame, so a panel never shows the occlusion of one picture beside the saliency of another.

One round = the jobs started together on one frame. The round's *lead* (the slow, progressive occlusion map)
decides when the panel switches to the new frame: its results are drawn as they come; the other parts wait for
its first one, and a part that is not ready then is cleared ("computing for this frame") rather than left showing
the previous picture. Results of an older round are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .widgets.frame_tag import FrameTag


class FrameRound:
    def __init__(self, tag: FrameTag | None = None) -> None:
        self.tag = tag
        self.res = None  # the FrameResult the round's jobs run on
        self.parts: tuple[str, ...] = ()
        self.lead = ""
        self.round = 0
        self.shown = False  # the round is on screen (its lead, or its first part without a lead, has drawn)
        self._pending: dict[str, Callable[[], None]] = {}
        self._clear: dict[str, Callable[[], None]] = {}
        self._drawn: set[str] = set()

    @property
    def image(self):
        return None if self.res is None else self.res.image

    @property
    def complete(self) -> bool:
        """Every part has drawn a result of this round."""
        return self.shown and self._drawn >= set(self.parts)

    def start(self, res, parts: Iterable[str], *, lead: str = "",
              clear: dict[str, Callable[[], None]] | None = None) -> int:
        """A new round on `res` (a FrameResult) for `parts`; `clear[part]` empties a part's views when the lead
        shows before it. Returns the round's number: hand it to `deliver`."""
        self.round += 1
        self.res, self.parts = res, tuple(parts)
        self.lead = lead if lead in self.parts else ""
        self.shown = False
        self._pending, self._drawn = {}, set()
        self._clear = dict(clear or {})
        return self.round

    def deliver(self, round_no: int, part: str, draw: Callable[[], None]) -> None:
        """A result of `part` computed in round `round_no`: drawn now, or once the lead has drawn."""
        if round_no != self.round or part not in self.parts:
            return  # an older round's result: another picture
        if self.shown or part == self.lead or not self.lead:
            first = not self.shown
            draw()
            self._drawn.add(part)
            if first:
                self._show()
            return
        self._pending[part] = draw  # a newer result of the part replaces the waiting one

    def _show(self) -> None:
        """The lead drew its first result of this round: the waiting parts follow, the others are cleared."""
        self.shown = True
        for part in self.parts:
            if part in self._drawn:
                continue
            if part in self._pending:
                self._pending.pop(part)()
                self._drawn.add(part)
            elif part in self._clear:
                self._clear[part]()
        if self.tag is not None:
            self.tag.set_frame(self.res)
