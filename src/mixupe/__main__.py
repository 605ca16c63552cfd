"""``python -m mixupe``: the same command as the ``mixupe`` console script."""

from __future__ import annotations

import sys

from mixupe.cli import main

if __name__ == "__main__":
    sys.exit(main())
