"""The wrk client of the HTTP benchmarks (gis_ioc.bench_wrk) reads what wrk measured, errors included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gis_ioc import bench_wrk


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        _Handler.seen.append(self.path)
        found = self.path.startswith("/tiles/")
        body = b"tile" if found else b"no"
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wrk_walks_the_paths_and_reports_rate_latency_and_errors(base):
    assert bench_wrk.available()  # make setup installs it
    _Handler.seen.clear()
    tiles = [(8, 203, 118), (9, 407, 236)]
    [good] = bench_wrk.tiles(base, "incidents", tiles, (2,), seconds=1)
    assert good["requests"] > 0 and good["rate"] > 0 and good["errors"] == 0
    assert 0 < good["p50_ms"] <= good["p99_ms"]
    assert set(_Handler.seen) == {"/tiles/incidents/8/203/118.mvt", "/tiles/incidents/9/407/236.mvt"}
    bad = bench_wrk.load(base, ["/nope"], 1, seconds=1, warmup=0)
    assert bad["requests"] > 0 and bad["errors"] == bad["requests"]
