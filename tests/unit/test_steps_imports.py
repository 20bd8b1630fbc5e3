"""The step modules the replay engine will import do not pull in Ray."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import actors.steps.codec, actors.steps.blobs, actors.steps.results, actors.steps.refs
import actors.steps.metrics
print(json.dumps({"ray": "ray" in sys.modules}))
"""


def test_step_modules_import_without_ray() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ray": False}
