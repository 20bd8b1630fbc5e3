"""``python -m benchmarks.restate_peer``: see ``benchmarks.restate_peer.bench`` (or ``--help``)."""

import sys

from benchmarks.restate_peer.bench import main

sys.exit(main())
