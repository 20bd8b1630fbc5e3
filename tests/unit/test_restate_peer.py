"""The Restate peer benchmark's pure parts (``benchmarks.restate_peer``): the raw HTTP/1.1
client, the /proc parser, the figures of a cell. Needs neither Ray nor Restate."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from benchmarks.restate_peer import install, loads, procstat, rawhttp, table
from benchmarks.runner import Samples


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_parse_head() -> None:
    status, headers = rawhttp.parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b:c")
    assert status == 200 and headers == {"content-length": "2", "x-a": "b:c"}
    with pytest.raises(rawhttp.ProtocolError):
        rawhttp.parse_head(b"SPDY/3 200 OK")
    with pytest.raises(rawhttp.ProtocolError):
        rawhttp.parse_head(b"HTTP/1.1 200 OK\r\nno colon here")


def test_read_response_lengths() -> None:
    async def go() -> None:
        r = _reader(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n123"
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
            b"HTTP/1.1 200 OK\r\n\r\nrest"
        )
        first = await rawhttp.read_response(r)
        assert (first.status, first.body, first.keep_alive) == (200, b"123", True)
        second = await rawhttp.read_response(r)
        assert (second.status, second.body, second.keep_alive) == (500, b"wikipedia", False)
        assert (await rawhttp.read_response(r)).body == b""
        with pytest.raises(rawhttp.ProtocolError):
            await rawhttp.read_response(r)

    asyncio.run(go())


def test_request_bytes_types_only_a_body() -> None:
    empty = rawhttp.request_bytes("POST", "/C/k/get", "h:1")
    assert empty == b"POST /C/k/get HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
    full = rawhttp.request_bytes("POST", "/S/h", "h:1", b"12")
    assert b"Content-Type: application/json\r\n" in full and full.endswith(b"\r\n\r\n12")


def test_client_keeps_connections_alive() -> None:
    """Calls reuse one connection per concurrent caller; ``Connection: close`` makes the next
    call open another; a non-2xx status raises HttpError."""

    async def go() -> None:
        accepted: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                request_line, rest = head[:-4].split(b"\r\n", 1)
                _, headers = rawhttp.parse_head(b"HTTP/1.1 200 X\r\n" + rest)
                body = await reader.readexactly(int(headers["content-length"]))
                path = request_line.split(b" ")[1]
                status, close = (404, False) if path == b"/missing" else (200, path == b"/close")
                answer = json.dumps({"echo": json.loads(body) if body else None}).encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s"
                    % (status, len(answer), b"connection: close\r\n" if close else b"", answer)
                )
                await writer.drain()
                if close:
                    break
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = rawhttp.Client("127.0.0.1", port)
        try:
            assert await client.call("/a", 7) == {"echo": 7}
            assert await client.call("/a") == {"echo": None}
            assert len(accepted) == 1
            await asyncio.gather(*(client.call("/a", i) for i in range(3)))
            assert len(accepted) == 3 and len(client.idle) == 3
            await client.call("/close", 1)
            assert len(client.idle) == 2
            with pytest.raises(rawhttp.HttpError) as e:
                await client.call("/missing", 1)
            assert e.value.status == 404
        finally:
            client.close()
            server.close()

    asyncio.run(go())


def test_parse_stat_counts_from_the_last_parenthesis() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 8 + ["10"] + ["0"] * 20
    usage = procstat.parse_stat(f"42 (a (weird) name) {' '.join(fields)}", ticks=100, page=4096)
    assert usage == procstat.Usage(cpu_s=3.0, rss_bytes=40960)
    assert procstat.usage(2**22 + 12345) is None  # no such process


def test_summary_and_row() -> None:
    s = Samples(
        window_s=2.0, completed_in_window=10, ok=12, latencies_s=[i / 1000 for i in range(1, 101)]
    )
    figures = loads.summary(s)
    assert figures["inv_per_s"] == 5.0 and figures["calls"] == 10
    assert (figures["p50_ms"], figures["p90_ms"], figures["p99_ms"]) == (50.0, 90.0, 99.0)
    assert math.isnan(loads.summary(Samples(window_s=1.0))["p50_ms"])
    assert loads.three_steps_expected(5) == 11

    u = procstat.Usage
    snaps = {
        "start": (10.0, {"restate": u(1.0, 0), "sdk": u(2.0, 0), "driver": None}),
        "end": (12.0, {"restate": u(1.5, 2**21), "sdk": u(2.25, 2**20), "driver": None}),
    }
    r = table.row("hot", 16, {**figures, "problems": []}, snaps)
    assert r["check"] == "OK" and r["cpu_s"] == {"restate": 0.5, "sdk": 0.25}
    assert r["cpu_ms_per_inv"] == 75.0 and r["rss_mb"] == {"restate": 2, "sdk": 1}
    failed = table.row("hot", 1, {"problems": ["a", "b"], "p50_ms": math.nan}, {})
    assert failed["check"] == "FAIL: a; b"
    assert json.loads(table.json_line(failed))["p50_ms"] is None


def test_install_command_names_the_cache() -> None:
    command = install.install_command()
    assert command[:2] == ["npm", "install"] and command[-1] == install.PACKAGE
    assert str(install.cache_dir()) in command
    assert install.binary_path().name == "restate-server"


class FakeIngress:
    """The counter's ingress calls in memory; ``lose`` drops every add of that number."""

    def __init__(self, lose: int | None = None) -> None:
        self.counts: dict[str, int] = {}
        self.lose = lose
        self.adds = 0

    async def call(self, path: str, payload: object = rawhttp.NO_BODY) -> object:
        _, _, key, handler = path.split("/")
        if handler == "get":
            return self.counts.get(key, 0)
        self.adds += 1
        n = self.counts.get(key, 0) + int(payload)  # type: ignore[call-overload]
        if self.adds != self.lose:
            self.counts[key] = n
        return n


def test_counter_check_catches_a_lost_add() -> None:
    async def go(fake: FakeIngress) -> list[str]:
        load = loads.CounterLoad(fake, "p-", keys=3, warm=True)  # type: ignore[arg-type]
        await load.warm()
        for n in range(12):
            await load.call(n)
        return await load.check()

    assert asyncio.run(go(FakeIngress())) == []
    problems = asyncio.run(go(FakeIngress(lose=5)))
    assert len(problems) == 2 and "get 3, acknowledged 4" in problems[0]
