"""How a long computation learns it should stop: one `Abort` type and one check, shared by every cancellable job.

A job takes `abort=` as None (run to the end), a `threading.Event` (the GUI's job runner sets it) or a callable
returning True once the caller wants out; it calls `aborted(abort)` between steps and stops there, so hooks and
partial files are cleaned up by the job itself rather than by a killed thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Abort = Callable[[], bool] | threading.Event | None

__all__ = ["Abort", "aborted"]


def aborted(abort: Abort) -> bool:
    """True once `abort` says stop."""
    if abort is None:
        return False
    return abort.is_set() if isinstance(abort, threading.Event) else bool(abort())
