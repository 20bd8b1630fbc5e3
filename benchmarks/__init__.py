"""Load generators for raystate: ``python -m benchmarks --help``.

They print throughput and latency; they are not timed tests and make no pass/fail claim about
speed (only about correctness: a counter run checks that every acknowledged add was counted).
"""
