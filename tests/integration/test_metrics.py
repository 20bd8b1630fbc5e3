"""raystate_ metrics reach Ray's Prometheus endpoint (Ray's metrics agent, part of ray[default])."""

from __future__ import annotations

import os
import re
import urllib.request

import pytest
import ray

from actors.steps import metrics
from journal.metrics import limit_slots
from tests.conftest import assert_eventually

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _endpoint() -> str:
    here = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == here)
    if node.get("MetricsAgentPort", -1) <= 0 or node.get("MetricsExportPort", -1) <= 0:
        pytest.skip("Ray's metrics agent is not running (it comes with ray[default])")
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def _series(url: str) -> list[tuple[str, dict[str, str], float]]:
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and "raystate_" in m["name"]:
            out.append((m["name"], dict(_LABEL.findall(m["labels"] or "")), float(m["value"])))
    return out


def _value(series, name: str, **labels: str) -> float | None:
    found = [
        v
        for n, lab, v in series
        if n == name and all(lab.get(k) == want for k, want in labels.items())
    ]
    return sum(found) if found else None


@ray.remote(num_cpus=0)
def _record_in_a_worker(service: str) -> None:
    metrics.invocation_done(service, "add", "succeeded")
    metrics.journal_commit(0.003, 17)
    metrics.queued_invocations(f"{service}-host-0", 4)
    metrics.timer_lateness(0.2)
    metrics.attempt_latency(service, "add", 0.04)
    limit_slots(service, 3, 7)


def test_raystate_series_appear_on_rays_prometheus_endpoint(ray_session) -> None:
    url = _endpoint()
    service = f"M{os.getpid()}"
    metrics.invocation_done(service, "add", "succeeded")
    metrics.invocation_done(service, "add", "failed")
    metrics.step_latency(service, "add", 0.012, remote=True)
    ray.get(_record_in_a_worker.remote(service))

    def complete():
        s = _series(url)
        done = _value(s, "ray_raystate_invocations_total", service=service, status="succeeded")
        queued = _value(s, "ray_raystate_queued_invocations", host=f"{service}-host-0")
        return s if done == 2 and queued == 4 else None

    s = assert_eventually(complete, timeout=60, interval=0.5, message="raystate_ series")
    assert _value(s, "ray_raystate_invocations_total", service=service, status="failed") == 1
    assert _value(s, "ray_raystate_limit_held_slots", limit=service) == 3
    assert _value(s, "ray_raystate_limit_waiting_invocations", limit=service) == 7
    assert _value(s, "ray_raystate_step_latency_seconds_count", service=service, kind="remote") == 1
    # Ray's histograms sum bucket midpoints: 0.012 lies in (0.01, 0.02]
    assert 0.01 <= _value(s, "ray_raystate_step_latency_seconds_sum", service=service) <= 0.02
    assert _value(s, "ray_raystate_step_latency_seconds_bucket", service=service, le="0.01") == 0
    assert _value(s, "ray_raystate_attempt_latency_seconds_count", service=service) == 1
    assert (_value(s, "ray_raystate_journal_commit_batch_size_count") or 0) >= 1
    assert (_value(s, "ray_raystate_journal_commit_latency_seconds_count") or 0) >= 1
    assert (_value(s, "ray_raystate_timer_lateness_seconds_count") or 0) >= 1
