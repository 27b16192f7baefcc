"""The main window's menu bar: File, Source, Model, View and Help menus and their actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QKeySequence

from ..zoo import available_models

if TYPE_CHECKING:
    from .main_window import MainWindow


def build_menus(win: MainWindow) -> None:
    bar = win.menuBar()
    file_menu = bar.addMenu("&File")
    add_action(win, file_menu, "Open image...", lambda: win._open_dialog("image"), QKeySequence.StandardKey.Open)
    add_action(win, file_menu, "Open video...", lambda: win._open_dialog("video"))
    add_action(win, file_menu, "Open folder...", lambda: win._open_dialog("folder"))
    file_menu.addSeparator()
    add_action(win, file_menu, "Open top-k store...", win._open_store_dialog)
    add_action(win, file_menu, "Open pattern folder...", win._open_pattern_folder_dialog)
    win.save_live_action = add_action(win, file_menu, "Save live top-k as store...", win.save_live_topk_dialog)
    file_menu.addSeparator()
    add_action(win, file_menu, "Save snapshot", win.save_snapshot_now, QKeySequence("Ctrl+S"))
    add_action(win, file_menu, "Save snapshot to...", win.save_snapshot_dialog, QKeySequence("Ctrl+Shift+S"))
    file_menu.addSeparator()
    add_action(win, file_menu, "Quit", win.close, QKeySequence("Ctrl+Q"))
    win.source_menu = source_menu = bar.addMenu("&Source")
    win.camera_actions: list[QAction] = []
    win._camera_sep = source_menu.addSeparator()
    source_menu.aboutToShow.connect(win._refresh_cameras)  # cameras come and go: list them when opened
    win._refresh_cameras()
    add_action(win, source_menu, "Demo (photos)", lambda: win.open_source_text("demo"))
    source_menu.addSeparator()
    win.mirror_action = add_action(win, source_menu, "Mirror", win.toggle_mirror)
    win.mirror_action.setCheckable(True)
    win.mirror_action.setChecked(win.mirror)
    win.freeze_action = add_action(win, source_menu, "Freeze camera  (f)", win.toggle_camera_freeze)
    win.freeze_action.setCheckable(True)
    model_menu = bar.addMenu("&Model")
    for name in available_models():
        add_action(win, model_menu, name, lambda _=False, n=name: win.switch_model(n))
    model_menu.addSeparator()
    add_action(win, model_menu, "Open model spec (.toml)...", win._open_spec_dialog)
    view_menu = bar.addMenu("&View")
    for dock in win.docks.values():
        view_menu.addAction(dock.toggleViewAction())
    view_menu.addSeparator()
    win.pattern_action = add_action(win, view_menu, "Pattern mode  (p)", lambda: win.set_pattern_mode(
        not win.pattern_on))
    win.pattern_action.setCheckable(True)
    win.optimize_layer_action = add_action(win, view_menu, "Optimize layer (fill the pattern cache)",
                                           win.toggle_optimize_layer)
    view_menu.addSeparator()
    add_action(win, view_menu, "Reset layout", win.reset_layout)
    help_menu = bar.addMenu("&Help")
    add_action(win, help_menu, "Shortcuts  (h)", lambda: win.help.toggle())


def add_action(win: MainWindow, menu, text, slot, shortcut=None) -> QAction:
    action = QAction(text, win)
    if shortcut is not None:
        action.setShortcut(shortcut)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action
