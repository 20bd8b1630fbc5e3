"""The step modules the replay engine will import do not pull in Ray."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import actors.steps.codec, actors.steps.blobs, actors.steps.results, actors.steps.refs
import actors.steps.metrics, actors.steps.runner, actors.engine.context
print(json.dumps({"ray": "ray" in sys.modules}))
"""


def test_step_modules_import_without_ray() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ray": False}


LAZY_PROBE = """
import json, sys
import actors
before = "actors.steps.refs" in sys.modules
ref = actors.DurableRef
print(json.dumps({"before": before, "name": ref.__name__}))
"""


def test_durable_ref_is_exported_lazily_from_actors() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "before": False,
        "name": "DurableRef",
    }
