"""``python -m trioworker run MODULE:ATTR ...`` — the same as the ``trioworker`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
