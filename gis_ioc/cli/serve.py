"""serve, openapi: the server and its published contract."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gis_ioc.cli.common import _catalog, _engine, _settings, app, err_console, out


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [GIS_IOC_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [GIS_IOC_PORT, 8000].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [GIS_IOC_WORKERS, 1].")] = None,
    demo_if_empty: Annotated[bool, typer.Option(help="Load the demo province when the layers are empty.")] = False,
    open_wall: Annotated[bool, typer.Option(help="Open the wall full screen in Chromium when there is a display.")]
    = False,
) -> None:
    """Serve the API and the map views (applies pending migrations first)."""
    from gis_ioc import db, demo
    from gis_ioc.web import server

    settings = _settings()
    url = db.database_url(settings)
    engine = _engine(settings.model_copy(update={"database_url": url}))
    if demo_if_empty and demo.is_empty(engine):
        err_console.print("gis-ioc: the layers are empty, loading the Kon Tum demo…")
        demo.load_demo(engine, _catalog(settings, engine))
    engine.dispose()
    host = host or settings.host
    port = port or settings.port
    os.environ["GIS_IOC_DATABASE_URL"] = url  # workers connect to the same database
    err_console.print(f"gis-ioc: serving on http://{host}:{port}/ (Ctrl-C stops)")
    wall = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/views/wall"
    err_console.print(f"gis-ioc: the wall map is at {wall}", highlight=False)
    if open_wall:
        _open_wall_when_ready(wall)
    server.run(host, port, workers or settings.workers)


@app.command("proxy-config")
def proxy_config(
    upstream: Annotated[str, typer.Option(help="The gis-ioc processes, host:port, comma-separated.")]
    = "127.0.0.1:8000",
    cache_dir: Annotated[str, typer.Option(help="nginx's tile cache folder (nginx's user writes it).")]
    = "/var/cache/nginx/gis-ioc",
    listen: Annotated[str, typer.Option(help="nginx's listen parameters (e.g. `443 ssl`).")] = "80",
    cache_mb: Annotated[int, typer.Option(min=16, max=1_000_000, help="Largest size of the tile cache, MB.")]
    = 4096,
    server_name: Annotated[str, typer.Option(help="nginx's server_name.")] = "_",
) -> None:
    """The nginx configuration of the documented deployment: tiles kept by nginx, events unbuffered.

    Put it in ``/etc/nginx/conf.d/gis-ioc.conf`` (inside nginx's ``http`` block); add TLS to the server.
    """
    from gis_ioc import proxy

    upstreams = [u.strip() for u in upstream.split(",") if u.strip()]
    out.print(proxy.server_config(upstreams, cache_dir, listen, cache_mb, server_name), end="", markup=False,
              highlight=False, soft_wrap=True)


def _open_wall_when_ready(url: str) -> None:
    """On a machine with a display, open the wall in Chromium's kiosk mode once the server answers."""
    import shutil
    import subprocess
    import threading
    import time

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or browser is None:
        err_console.print("gis-ioc: no display here; open the wall URL above in a browser", highlight=False)
        return

    def wait_then_open() -> None:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url.replace("/views/wall", "/health"), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        subprocess.Popen([browser, "--kiosk", "--no-first-run", "--disable-background-networking", url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    threading.Thread(target=wait_then_open, daemon=True).start()


@app.command()
def openapi(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the document.")] = Path("api/openapi.json"),
) -> None:
    """Write the OpenAPI document of the HTTP API (the published contract)."""
    from gis_ioc.web.app import openapi_document

    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(openapi_document() + "\n", encoding="utf-8")
    out.print(f"wrote {out_file}")
