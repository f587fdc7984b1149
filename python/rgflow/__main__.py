"""``python -m rgflow``: the command line (see :mod:`rgflow.cli`)."""

import sys

from .cli import main

sys.exit(main())
