"""`python -m deepvis_app` is the same program as `deepvis` (torchrun launches it this way).

Python puts the current directory first on `sys.path` for `-m`; a model spec names a module to import, so a
stray `./evilplug.py` would be picked up from wherever the command was started. Drop that entry (our own
package is already imported, and PYTHONPATH entries stay) unless Python's safe-path mode already left it out.
"""

import os
import sys

if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import main  # noqa: E402

sys.exit(main())
