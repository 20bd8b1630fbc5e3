"""Flow control in definitions: ``concurrency=`` and ``rate=`` on a service, object or workflow
and on one handler (``Service("LLM", concurrency=8, rate=RateLimit(100, per=timedelta(
minutes=1)))``). The limiter (``scheduler.limiter``) enforces them over the whole cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from scheduler.limiter import LimitSpec


@dataclass(frozen=True)
class RateLimit:
    """At most ``n`` invocations start in any window of ``per``."""

    n: int
    per: timedelta = timedelta(seconds=1)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"RateLimit: n must be a positive int, got {self.n!r}")
        if not isinstance(self.per, timedelta) or self.per <= timedelta(0):
            raise ValueError(f"RateLimit: per must be a positive timedelta, got {self.per!r}")


def limit_issues(concurrency: object, rate: object) -> list[str]:
    """What is wrong with a ``concurrency=``/``rate=`` pair (empty: nothing)."""
    issues = []
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        issues.append(f"concurrency must be a positive int, not {concurrency!r}")
    if rate is not None and not isinstance(rate, RateLimit):
        issues.append(f"rate must be a RateLimit, not {rate!r}")
    return issues


def limit_spec(name: str, concurrency: int | None, rate: RateLimit | None) -> LimitSpec | None:
    """The limiter's form of a limit named ``name``; None when there is none."""
    if concurrency is None and rate is None:
        return None
    return LimitSpec(
        name,
        concurrency,
        None if rate is None else rate.n,
        0 if rate is None else max(int(rate.per.total_seconds() * 1000), 1),
    )
