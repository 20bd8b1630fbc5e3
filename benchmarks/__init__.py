"""Load generators for raystate: ``python -m benchmarks --help``.

``python -m benchmarks`` (``suite``) starts a private Ray and the runtime, and runs each
workload (``workloads``) at each client concurrency from a separate load-driver process
(``driver``), sampling CPU and memory per process kind (``procs``) and printing tables and JSON
lines (``report``); with ``--partitions 1,2,4`` it compares partition counts (``compare``).
``python -m benchmarks.timers`` and ``python -m benchmarks.journal_write`` are the
timer-lateness and journal-write benchmarks. ``python -m benchmarks.restate_peer``
runs the real Restate on the same workloads (``--restate`` does it within ``python -m
benchmarks``, as the baseline of the report's ratios).

They print throughput and latency; they are not timed tests and make no pass/fail claim about
speed (only about correctness: every cell checks its results, e.g. that every acknowledged add
was counted exactly once).
"""
