"""The registered features, in the order the window composes them (docks, menus, keys, status bar).

A new feature is one module here with a `Feature` subclass and one line in FEATURES; nothing else in `gui/` changes.
Features never import each other (an import-linter contract checks it): they share the app state and AppEvents.
"""

from __future__ import annotations

from .adversarial import AdversarialFeature
from .atlas_link import AtlasLinkFeature
from .attention import AttentionFeature
from .embedding import EmbeddingFeature
from .grid import GridFeature
from .heatmap import HeatMapFeature
from .help import HelpFeature
from .imagelab import ImageLabFeature
from .input import InputFeature
from .inspector import InspectorFeature
from .interventions import InterventionsFeature
from .layers import LayersFeature
from .models import ModelsFeature
from .optimize import OptimizeFeature
from .patterns import PatternsFeature
from .predictions import PredictionsFeature
from .record import RecordFeature
from .snapshots import SnapshotsFeature
from .sources import SourcesFeature
from .status import StatusFeature
from .topk import TopKFeature
from .weights import WeightsFeature
from .where import WhereFeature

FEATURES = [
    GridFeature,
    InputFeature,
    LayersFeature,
    InspectorFeature,
    TopKFeature,
    OptimizeFeature,
    PatternsFeature,
    PredictionsFeature,
    SourcesFeature,
    ModelsFeature,
    SnapshotsFeature,
    StatusFeature,
    WhereFeature,
    ImageLabFeature,
    EmbeddingFeature,
    WeightsFeature,
    AdversarialFeature,
    HeatMapFeature,
    AttentionFeature,
    AtlasLinkFeature,
    InterventionsFeature,
    RecordFeature,
    HelpFeature,
]
