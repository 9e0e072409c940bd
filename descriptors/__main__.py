"""Entry point for `python -m descriptors`; see `descriptors.cli`."""

import sys

from descriptors.cli import main

sys.exit(main())
