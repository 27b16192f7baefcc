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


class ParamError(DeepVisError):
    """A bad value for one of the core's parameters, said in the core's words.

    `param` is the parameter's name as the core's API spells it (`top_k`, `frames`); `problem` says what is wrong
    (`"must be at least 1, got 0"`). `str(err)` is `"top_k must be at least 1, got 0"` (what the GUI shows); the
    CLI rewrites the name into its flag (`--top-k must be at least 1, got 0`) with `flag_message`, so the core
    never names command-line flags.
    """

    def __init__(self, param: str, problem: str, *, exit_code: int = 2) -> None:
        super().__init__(f"{param} {problem}", exit_code=exit_code)
        self.param = param
        self.problem = problem

    def flag_message(self, flags: dict[str, str] | None = None) -> str:
        """The message with the parameter named as a command-line flag (`flags` maps odd names to flags)."""
        flag = (flags or {}).get(self.param) or "--" + self.param.replace("_", "-")
        return f"{flag} {self.problem}"
