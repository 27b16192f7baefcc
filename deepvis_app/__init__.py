"""DeepVis: live deep visualization of convolutional networks.

The compute core (this package minus `deepvis_app.gui`) imports no Qt.
"""

from .errors import DeepVisError
from .zoo import VisModel, available_models, load_model

__all__ = ["DeepVisError", "VisModel", "available_models", "load_model"]
__version__ = "0.1.0"
