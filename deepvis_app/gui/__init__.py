"""The live window (PySide6 + pyqtgraph). Only this package imports Qt; the core stays Qt-free."""

import os as _os

_os.environ.setdefault("QT_API", "pyside6")  # pyqtgraph must bind to PySide6, whatever else is installed
