"""``python -m benchmarks``: see ``benchmarks.suite`` (or ``--help``)."""

import sys

from benchmarks.suite import main

sys.exit(main())
