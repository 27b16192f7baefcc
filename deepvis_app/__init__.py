"""DeepVis: live deep visualization of convolutional networks.

The compute core (this package minus `deepvis_app.gui`) imports no Qt.
"""

import os as _os

# OpenMP's wait policy must be chosen before torch loads, hence here. Measured (issue 17): torch's default (idle
# team threads spin) collapses next to other busy programs on a small CPU (a 32-step optimize ran past 100 s), while
# PASSIVE (idle threads sleep) cost the live window ~35% of its fps on a quiet 2-core machine (gui_latency: 13.6-15.7
# vs 19.7 fps; click->paint 110-126 vs 80 ms). Until a clean measurement settles it, the default stays torch's;
# DEEPVIS_WAIT_POLICY=passive (a shared or busy machine) opts in; a user's own OMP_WAIT_POLICY always wins.
if _os.environ.get("DEEPVIS_WAIT_POLICY", "").lower() == "passive":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import DeepVisError  # noqa: E402

__all__ = ["DeepVisError", "VisModel", "available_models", "load_model"]
_ZOO_NAMES = ("VisModel", "available_models", "load_model")


def __getattr__(name: str):
    """The model API on first use: `import deepvis_app.state` (the GUI's Qt-free model) must not load torch."""
    if name in _ZOO_NAMES:
        from . import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'deepvis_app' has no attribute {name!r}")
__version__ = "0.1.0"
