"""The dark Qt style sheet of the main window (and its message banner).

Check boxes get their own indicator: the platform's is a dark outline that all but vanishes on this background, so
an unchecked box looked like a bare label. Unchecked: a light outline; checked: filled yellow (the selection
colour)."""

STYLE = """
QMainWindow, QWidget { background: #14161c; color: #e6e6e6; }
QDockWidget::title { background: #232631; padding: 4px; font-weight: bold; }
QTreeWidget { background: #0e0f13; alternate-background-color: #15171d; border: none; }
QTreeWidget::item:selected { background: #3a3f1a; color: #ffd60a; }
QHeaderView::section { background: #232631; color: #c8c8c8; border: none; padding: 2px 4px; }
QComboBox, QPushButton, QToolButton { background: #232631; border: 1px solid #343846; padding: 2px 6px; }
QComboBox:hover, QPushButton:hover { border-color: #5a6070; }
QLabel#paneTitle { color: #a9b0c0; font-size: 11px; border-top: 1px solid #343846; padding-top: 2px; }
QLabel#inspectorHeader { font-size: 13px; padding: 2px; }
QCheckBox::indicator { width: 12px; height: 12px; border: 1px solid #9aa1b3; background: #0e0f13; }
QCheckBox::indicator:hover { border-color: #e6e6e6; }
QCheckBox::indicator:checked { background: #ffd60a; border: 1px solid #ffd60a; image: none; }
QCheckBox::indicator:disabled { border-color: #4a4f5e; }
QCheckBox:disabled { color: #70778a; }
QStatusBar { background: #1b1d25; color: #c8c8c8; }
QStatusBar QLabel { padding: 0 6px; }
QMenuBar { background: #1b1d25; } QMenuBar::item:selected { background: #343846; }
QMenu { background: #1b1d25; border: 1px solid #343846; } QMenu::item:selected { background: #343846; }
QFrame#banner[level="error"] { background: #5c1f24; border-bottom: 1px solid #b3434d; }
QFrame#banner[level="info"] { background: #1f3a5c; border-bottom: 1px solid #4a78b3; }
QFrame#banner QLabel, QFrame#banner QToolButton { background: transparent; border: none; font-weight: bold; }
"""
