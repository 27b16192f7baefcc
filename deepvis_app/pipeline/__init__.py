"""The live pipeline: capture thread -> latest-frame slot -> inference worker -> immutable FrameResult.

Nothing here knows about Qt. The GUI hands the worker small immutable `ViewRequest`s (newest wins) and
receives `FrameResult`s through a callback that it turns into a queued signal; `run_headless` drives the
exact same objects without a window.

- `frames`: Frame, LatestSlot (the one-frame mailbox), CaptureThread (reads a source into the slot), check_fps.
- `processor`: FrameProcessor (one frame + one request -> FrameResult, every layout drawn through
  `layouts.as_maps`), validate_request.
- `worker`: InferenceWorker (the thread that owns the model).
- `headless`: run_headless, HeadlessReport, FrameStat.
"""

from __future__ import annotations

from ..values import ATTRIBUTION_METHODS, TopKTile, Unit, ViewRequest  # re-exported for old callers: use values
from .frames import MAX_FPS, MIN_FPS, CaptureThread, Frame, LatestSlot, StatusFn, check_fps
from .headless import MAX_TIMEOUT, FrameStat, HeadlessReport, check_headless, run_headless
from .processor import LIVE_TOPK_SIMILAR, FrameProcessor, FrameResult, unit_peak, validate_request
from .worker import InferenceWorker

__all__ = [
    "ATTRIBUTION_METHODS", "LIVE_TOPK_SIMILAR", "MAX_FPS", "MAX_TIMEOUT", "MIN_FPS", "CaptureThread", "Frame",
    "FrameProcessor", "FrameResult", "FrameStat", "HeadlessReport", "InferenceWorker", "LatestSlot", "StatusFn",
    "TopKTile", "Unit", "ViewRequest", "check_fps", "check_headless", "run_headless", "unit_peak",
    "validate_request",
]
