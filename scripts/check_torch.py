"""Print the installed torch/torchvision and fail when they are not the pinned build (`make test` runs this).

Usage: python scripts/check_torch.py torch==2.14.1 torchvision==0.29.1
A different version means `make setup` fell back to another build; that is allowed only when asked for with
TORCH_FALLBACK=1 (then this prints a warning instead of failing), never silently.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version


def main(pins: list[str]) -> int:
    bad = []
    for pin in pins:
        name, _, wanted = pin.partition("==")
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "not installed"
        ok = not wanted or have.split("+")[0] == wanted
        print(f"{name} {have}" + ("" if ok else f"  (pinned: {wanted})"))
        if not ok:
            bad.append(f"{name} {have} instead of {wanted}")
    if bad and os.environ.get("TORCH_FALLBACK") == "1":
        print(f"WARNING: not the pinned build ({'; '.join(bad)}); allowed by TORCH_FALLBACK=1", file=sys.stderr)
        return 0
    if bad:
        print(f"error: not the pinned build: {'; '.join(bad)} (rebuild .venv with `make clean setup`, or set "
              "TORCH_FALLBACK=1 to accept another version)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
