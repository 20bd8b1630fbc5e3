"""``python -m examples.food_order [DATA_DIR] [--orders N] [--short]`` (from the repo root)."""

import sys

from examples.food_order.main import main

sys.exit(main())
