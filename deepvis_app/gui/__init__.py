"""The live window (PySide6 + pyqtgraph). Only this package imports Qt; the core stays Qt-free."""
