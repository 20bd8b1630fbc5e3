"""The Ray-free core imports without Ray (STYLE: "the logic lives in an ordinary class with no
Ray import ... The logic is then unit-testable without Ray")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
result = {}
import journal.store, journal.actor, journal.records, journal.schema, journal.sqlguard
result["journal"] = "ray" in sys.modules
import actors.sdk.errors
result["actors.sdk.errors"] = "ray" in sys.modules
import actors.engine.context, actors.host.object_host, actors.sdk.definitions, actors.sdk.serde
result["actors core"] = "ray" in sys.modules
print(json.dumps(result))
"""


# Started when this module is collected, so the fresh interpreter (about 1-2 s, most of it
# importing ray) runs while the other unit tests do; the fixture collects its answer.
_probe = subprocess.Popen(
    [sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
)


@pytest.fixture(scope="module")
def ray_imported() -> dict[str, bool]:
    """Which imports pulled in ``ray``, in a fresh interpreter (this one has imported it)."""
    out, err = _probe.communicate(timeout=120)
    assert _probe.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_journal_imports_without_ray(ray_imported: dict[str, bool]) -> None:
    assert ray_imported["journal"] is False


def test_actors_core_imports_without_ray(ray_imported: dict[str, bool]) -> None:
    assert ray_imported["actors.sdk.errors"] is False
    assert ray_imported["actors core"] is False
