"""`python -m deepvis_app` is the same program as `deepvis` (torchrun launches it this way)."""

import sys

from .cli import main

sys.exit(main())
