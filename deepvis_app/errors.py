"""User-facing errors: one clear line, never a traceback.

Anything a user can cause (a wrong path, a bad spec, a missing weights file) raises `DeepVisError`; the CLI
prints its message as one line and exits with `exit_code`, and the GUI shows it in the window.
"""

from __future__ import annotations


class DeepVisError(Exception):
    """An error caused by user input; `str(err)` is a complete one-line explanation."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class WeightsMissingError(DeepVisError):
    """Pretrained weights are not cached and could not be downloaded (usually: no network)."""


class SourceError(DeepVisError):
    """A frame source could not be opened or stopped delivering frames."""
