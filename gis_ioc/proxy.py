"""The documented deployment's reverse proxy: nginx in front of the gis-ioc processes, keeping tiles in its cache.

nginx answers a tile it holds without asking gis-ioc at all (a file and a ``sendfile``, no Python), which is the
cached path at its fastest. It keeps exactly what the server allows any HTTP cache to keep: a tile's
``Cache-Control: public, max-age=5`` (``private`` when reads need a key), each ``Vary`` variant apart. An expired
tile is served once more while nginx revalidates it in the background with its ETag (a 304 from gis-ioc's own
cache costs next to nothing), so a change is on every map within the same five seconds a browser's cache
allows. A client that asks past caches (``Cache-Control`` or ``Pragma`` in its request: the wall's
``no-cache`` fetches after a live change, a browser's reload) or that carries a key goes to gis-ioc, and a
keyed answer is never stored. Everything else passes through; ``/events`` unbuffered.

``server_config`` is the configuration the README shows (``gis-ioc proxy-config`` prints it for given
upstreams); ``running`` starts a private nginx with it for the benchmarks and the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gis_ioc.errors import InvalidInput

CACHE_ZONE = "gis_ioc_tiles"
# the plain tile paths (MapLibre, OpenLayers, Leaflet: /tiles/…; QGIS and OGC clients: /collections/…/tiles/…)
TILE_PATHS = r"^/(tiles/[^/]+/\d+/\d+/\d+\.mvt|collections/[^/]+/tiles/[^/]+/\d+/\d+/\d+)$"

PASS = """proxy_pass http://gis_ioc;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;"""


def server_config(upstreams: list[str], cache_dir: Path | str, listen: str = "80", cache_mb: int = 4096,
                  server_name: str = "_") -> str:
    """The ``http``-level part of nginx's configuration: the tile cache, the upstream and the server."""
    if not upstreams:
        raise InvalidInput("upstream: name at least one gis-ioc process (host:port)", param="upstream")
    for upstream in upstreams:
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit() or any(c in upstream for c in " ;{}'\"\n"):
            raise InvalidInput(f"upstream: {upstream!r} is not host:port", param="upstream")
    servers = "\n".join(f"    server {u};" for u in upstreams)
    return f"""proxy_cache_path {cache_dir} levels=1:2 keys_zone={CACHE_ZONE}:32m max_size={cache_mb}m inactive=1h
                 use_temp_path=off;
upstream gis_ioc {{
{servers}
    keepalive 64;
}}
server {{
    listen {listen};
    server_name {server_name};
    location /events {{
        {PASS}
        proxy_buffering off;
        proxy_read_timeout 1h;
    }}
    location ~ {TILE_PATHS} {{
        {PASS}
        proxy_cache {CACHE_ZONE};
        proxy_cache_revalidate on;
        proxy_cache_lock on;
        proxy_cache_background_update on;
        proxy_cache_use_stale updating error timeout http_502 http_503 http_504;
        proxy_cache_bypass $http_cache_control $http_pragma $http_authorization $http_x_api_key $cookie_gis_ioc_key;
        proxy_no_cache $http_authorization $http_x_api_key $cookie_gis_ioc_key;
        add_header X-Cache-Status $upstream_cache_status always;
    }}
    location / {{
        {PASS}
    }}
}}
"""


def available() -> bool:
    """Whether nginx is installed (``make setup`` installs it)."""
    return _nginx() is not None


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@contextlib.contextmanager
def running(upstreams: list[str], port: int, workers: int = 1) -> Iterator[str]:
    """A private nginx on ``127.0.0.1:port`` with ``server_config`` (cache in a temporary folder); its base URL."""
    nginx = _nginx()
    if nginx is None:
        raise InvalidInput("nginx is not installed (make setup installs it)", param="proxy")
    with tempfile.TemporaryDirectory(prefix="gis-ioc-nginx-") as folder:
        root = Path(folder)
        (root / "logs").mkdir()
        temp = "\n".join(f"    {kind}_temp_path {root / kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # started by root (a CI container), nginx's workers would become nobody, who may not enter this
        # private, loopback-only instance's folder: they stay the user who started it
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (root / "nginx.conf").write_text(f"""daemon off;
{user}worker_processes {workers};
pid {root / "nginx.pid"};
error_log {root / "logs" / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
{server_config(upstreams, root / "cache", f"127.0.0.1:{port}", 256)}
}}
""")
        proc = subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise InvalidInput(f"nginx did not start: {err.strip()[-300:]}", param="proxy")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise InvalidInput("nginx did not listen within 10 s", param="proxy")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
