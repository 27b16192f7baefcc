"""DeepVis: live deep visualization of convolutional networks.

The compute core (this package minus `deepvis_app.gui`) imports no Qt.
"""

import os as _os

# Issue 17 (benchmarks/threads.py): torch's OpenMP team spin-waits by default; next to other busy programs on a small
# CPU the spinning threads starve each other (a 32-step optimize ran past 100 s instead of ~1 s). PASSIVE makes idle
# team threads sleep, so the app slows with the load instead of collapsing. It must be set before torch loads, hence
# here; a user's own OMP_WAIT_POLICY wins, and DEEPVIS_NO_THREAD_POLICY=1 (the benchmark's children) leaves it unset.
if not _os.environ.get("DEEPVIS_NO_THREAD_POLICY"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import DeepVisError  # noqa: E402
from .zoo import VisModel, available_models, load_model  # noqa: E402

__all__ = ["DeepVisError", "VisModel", "available_models", "load_model"]
__version__ = "0.1.0"
