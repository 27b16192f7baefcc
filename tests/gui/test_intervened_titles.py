"""While an intervention is active, the views that show the network's outputs say so (issue 27: no one mistakes an
intervened network for the real one): the grid's footer, the predictions' note and the input caption; and they
stop saying so when it is switched off."""

from __future__ import annotations

from deepvis_app.interventions import Intervention, title_note
from deepvis_app.values import ViewRequest

from .test_window import wait_result


def test_views_say_the_network_is_intervened(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.12"))
    wait_result(qtbot, win, lambda r: r.layer == "_blocks.12")
    grid, preds, inp = win.feature("grid").pane, win.feature("predictions").pane, win.feature("input")
    assert "intervened" not in grid.default_info() and preds.bars.note == "" and "INTERVENED" not in inp.caption()
    off = Intervention("_blocks.10", (3, 17), "zero")
    win.state.interventions = (off,)
    res = wait_result(qtbot, win, lambda r: r.interventions == (off,))
    note = title_note((off,))
    assert note.startswith("[intervened") and grid.default_info().endswith(note)
    qtbot.waitUntil(lambda: grid.info.toolTip().endswith(note) or grid.info.text().endswith(note), timeout=5000)
    assert preds.bars.note == note and "INTERVENED" in inp.caption()
    assert res.predictions_clean is not None
    win.state.interventions = (off.toggled(),)
    wait_result(qtbot, win, lambda r: r.interventions == ())
    assert "intervened" not in grid.default_info() and preds.bars.note == ""
