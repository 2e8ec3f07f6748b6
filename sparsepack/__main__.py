"""``python -m sparsepack``: the same as the ``sparsepack`` command."""

import sys

from .cli import main

sys.exit(main())
