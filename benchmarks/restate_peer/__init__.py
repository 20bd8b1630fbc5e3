"""The real Restate under raystate's benchmark workloads, on this machine: a baseline measured
in the same run, so that raystate's ratios to Restate do not lean on figures taken elsewhere.

Install (once; nothing goes into the repository)::

    pip install -e '.[peer]'      # restate-sdk==1.3.0 and hypercorn, for the SDK process
    # restate-server 1.7.12 (a Rust binary shipped on npm) installs itself on first use into
    # ~/.cache/raystate-bench/restate-1.7.12 (or $XDG_CACHE_HOME/...) with
    npm install --no-save --prefix ~/.cache/raystate-bench/restate-1.7.12 \\
        @restatedev/restate-server@1.7.12
    # RAYSTATE_RESTATE_SERVER=/path/to/restate-server uses another binary

Run::

    python -m benchmarks.restate_peer --workloads hot,keys1k,three_step,food \\
        --concurrency 1,16,64 --seconds 5 --warmup 1 [--json PATH] [--http1]
    python -m benchmarks --workloads hot,three_step --concurrency 1,16 --restate

The first prints a table and JSON lines of Restate alone; the second runs the same cells on
Restate first, stops it, then runs raystate, and its report's Restate columns show those
measured figures and raystate's ratios to them (without ``--restate``: the figures
hard-coded from the issue, taken on another machine).

What is compared: the same handlers (``services``, mirroring ``benchmarks.apps`` and
``benchmarks.food``: counter ``add``/``get``, ``three_steps`` with three ``ctx.run``, the
food-order flow with a 10 ms sleep, an awakeable and an awaited object call) under the same
closed loop (``benchmarks.runner.drive``: warm-up, measured window, nearest-rank
percentiles) from a separate driver process per cell, and the same checks (every counter
equals its acknowledged adds, every three-step result is right and completed, every order is
DELIVERED). Restate's side: restate-server with its defaults on a fresh temporary data dir
(``cluster``), the SDK app in its own process over h2c (``serve``), clients speaking raw
HTTP/1.1 keep-alive to the ingress, one connection each (``rawhttp``), as the issue's Restate
figures were taken. CPU seconds are those of restate-server, the SDK process and the driver
over the measured window (``procstat``). The two systems never run at once.
"""
