"""Command line: argument parsing only; every subcommand calls the core.

`deepvis` with no subcommand opens the window; `python -m deepvis_app` is the same program (torchrun needs it).
User errors print one line `deepvis: error: ...` and exit 2; nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from .commands.live_args import add_gui_args
from .errors import DeepVisError, ParamError

# Commands whose work is batched (many images or patch positions per op): they keep every core. The others run
# batch-1 work and get `devices.interactive_threads()`; the window sets its worker's threads itself.
BATCH_COMMANDS = frozenset(("scan", "embed", "occlude", "atlas", "evaluate"))

# Subcommand modules (deepvis_app/commands/<name>.py), each with register(subparsers) and run(args).
COMMAND_MODULES = ("run", "predict", "layers", "attribute", "scan", "optimize", "occlude", "segment", "filters",
                   "embed", "invert", "dream", "style", "fool", "atlas", "evaluate", "ablate", "rank")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with our error contract: a usage mistake is one line `deepvis: error: ...` and exit 2.

    Subparsers are created with the parent's class, so every subcommand inherits this."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        sub = self.prog.removeprefix("deepvis").strip()
        hint = f" (see `deepvis {sub} --help`)" if sub else " (see `deepvis --help`)"
        self.exit(2, f"deepvis: error: {' '.join(message.split())}{hint}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="deepvis",
        description="Watch every layer of a CNN see, live. Without a subcommand, opens the window.")
    add_gui_args(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(__package__):
                continue  # a feature not installed in this tree
            raise
        module.register(subparsers)
    return parser


# Core parameters whose command-line flag is not `--` + the name with dashes (ParamError -> one line naming the flag).
FLAGS = {"thumb": "--thumb-size", "start": "--from", "samples": "--smooth"}


def launch_gui(args: argparse.Namespace) -> int:
    """Open the window (bare `deepvis`, `deepvis run` without --headless): the one door from the command line into
    the GUI, so Qt is imported only when a window is wanted."""
    from .gui.app import main_gui

    return main_gui(args)


def command_func(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """What to run for the parsed `args`: the subcommand's `func`, or the window when there is none or the
    subcommand says so (`opens_window(args)`, e.g. `deepvis run` without --headless)."""
    func = getattr(args, "func", None)
    opens_window = getattr(args, "opens_window", None)
    if func is None or (opens_window is not None and opens_window(args)):
        return launch_gui
    return func


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return done.code if isinstance(done.code, int) else 2
    func = command_func(args)
    from .devices import keep_freed_memory

    keep_freed_memory()  # the program's own allocator policy; the library leaves the process alone on import
    if getattr(args, "command", None) and args.command not in BATCH_COMMANDS:
        import torch

        from .devices import interactive_threads

        torch.set_num_threads(interactive_threads())  # per-image work: measured in devices.interactive_threads
    try:
        return int(func(args) or 0)
    except ParamError as err:  # the core names its parameter; the user typed a flag
        print(f"deepvis: error: {' '.join(err.flag_message(FLAGS).split())}", file=sys.stderr)
        return err.exit_code
    except DeepVisError as err:
        print(f"deepvis: error: {' '.join(str(err).split())}", file=sys.stderr)
        return err.exit_code
    except MemoryError:
        print("deepvis: error: out of memory (try a smaller size, batch or --top-k)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # a file we were told to read or write: permission, full disk, not a directory
        where = f": {err.filename}" if err.filename else ""
        print(f"deepvis: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepvis: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
