"""The SDK process: Restate's Python SDK app (``services.app``) served by hypercorn.

    python -m benchmarks.restate_peer.serve --port PORT

Hypercorn answers HTTP/2 with prior knowledge (h2c) on a plain socket, which Restate uses to
reach a deployment registered without ``use_http_11``. The limits are raised as Restate's
docs recommend for hypercorn, so neither streams nor keep-alive cut a benchmark short.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import hypercorn.asyncio
from hypercorn.config import Config
from restate.server import install_shutdown_hook

from benchmarks.restate_peer.services import app

BIG = 2**31 - 1


def config(port: int) -> Config:
    conf = Config()
    conf.bind = [f"127.0.0.1:{port}"]
    conf.h2_max_concurrent_streams = BIG
    conf.keep_alive_max_requests = BIG
    conf.keep_alive_timeout = BIG
    conf.loglevel = "WARNING"
    # the SDK app declines ASGI lifespan events, and hypercorn then waits its whole shutdown
    # timeout (60 s) for a lifespan shutdown that never comes: stop promptly instead
    conf.shutdown_timeout = 1.0
    conf.graceful_timeout = 1.0
    return conf


async def serve(port: int) -> None:
    """Serve until SIGTERM or SIGINT. The SDK app takes over the loop's SIGTERM handler on its
    first request (to wind down its invocations), which would drop one set with
    ``add_signal_handler``; a hook registered through the SDK's own list runs beside its own."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_shutdown_hook(loop, stop.set, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await hypercorn.asyncio.serve(app, config(port), shutdown_trigger=stop.wait)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restate_peer.serve")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
