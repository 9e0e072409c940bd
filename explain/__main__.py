"""Entry point for `python -m explain`; see `explain.cli`."""

import sys

from explain.cli import main

sys.exit(main())
