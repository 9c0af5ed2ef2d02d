"""Fixtures: a real PostGIS (the private cluster, or GIS_IOC_TEST_DATABASE_URL), a template
database migrated once, and a fresh copy of it for each test that writes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg2
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine, make_url

from gis_ioc import db, demo
from gis_ioc.catalog import Catalog
from gis_ioc.cli import main
from gis_ioc.cluster import PrivateCluster
from gis_ioc.settings import PROJECT_ROOT, Settings
from gis_ioc.web.app import create_app

TEMPLATE = "gis_ioc_test_template"
DEMO_REF_TIME = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
DEMO_SCALE = 0.5


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(url: str):  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(_with_database(url, "postgres"))
    conn.autocommit = True
    return conn


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """A new database (empty, or a copy of ``template``); its URL."""
    conn = _admin(server_url)
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        conn.close()
    return _with_database(server_url, name)


def _create_from_template(server_url: str, name: str) -> str:
    return create_database(server_url, name, TEMPLATE)


def _drop(server_url: str, name: str) -> None:
    conn = _admin(server_url)
    try:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a database on the test server; the private cluster is stopped again if the tests started it."""
    given = os.environ.get("GIS_IOC_TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = PrivateCluster(Path(os.environ.get("GIS_IOC_HOME", PROJECT_ROOT / ".gis-ioc")))
    was_running = cluster.running_port() is not None
    url = cluster.ensure_running()
    yield url
    if not was_running:
        cluster.stop()


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """A database migrated once, the template of every test database."""
    conn = _admin(server_url)
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,))
    if cur.fetchone():
        cur.execute(f'ALTER DATABASE "{TEMPLATE}" WITH is_template false')
        cur.execute(f'DROP DATABASE "{TEMPLATE}" WITH (FORCE)')
    cur.execute(f'CREATE DATABASE "{TEMPLATE}"')
    conn.close()
    url = _with_database(server_url, TEMPLATE)
    engine = db.make_engine(url, pool_size=1)
    db.migrate(engine, PROJECT_ROOT / "db")
    engine.dispose()
    conn = _admin(server_url)
    conn.cursor().execute(f'ALTER DATABASE "{TEMPLATE}" WITH is_template true')
    conn.close()
    return url


@pytest.fixture
def db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated, empty database for one test."""
    name = f"gis_ioc_test_{uuid.uuid4().hex[:12]}"
    url = _create_from_template(server_url, name)
    yield url
    _drop(server_url, name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, home=tmp_path / "home")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.make_engine(settings.database_url or "", pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(settings: Settings, engine: Engine) -> Catalog:
    return Catalog.from_folder(settings.layers_dir, engine)


@pytest.fixture
def client(settings: Settings, engine: Engine, catalog: Catalog) -> Iterator[TestClient]:
    """The app on a database of its own holding a small demo province, for tests that write.

    A module reading the shared demo defines its own ``client``, which takes precedence.
    """
    demo.load_demo(engine, catalog, scale=0.02, ref_time=DEMO_REF_TIME)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def demo_url(server_url: str, template_url: str) -> Iterator[str]:
    """One database with the demo province, shared by the tests that only read."""
    name = f"gis_ioc_test_demo_{uuid.uuid4().hex[:8]}"
    url = _create_from_template(server_url, name)
    engine = db.make_engine(url, pool_size=1)
    demo.load_demo(engine, Catalog.from_folder(PROJECT_ROOT / "layers", engine), scale=DEMO_SCALE,
                   ref_time=DEMO_REF_TIME)
    engine.dispose()
    create_database(server_url, f"{name}_template", name)  # a copy nobody connects to: the template of demo_copy
    yield url
    _drop(server_url, name)
    _drop(server_url, f"{name}_template")


@pytest.fixture(scope="session")
def demo_engine(demo_url: str) -> Iterator[Engine]:
    engine = db.make_engine(demo_url, pool_size=2)
    yield engine
    engine.dispose()


@contextlib.contextmanager
def demo_copy(server_url: str, demo_url: str, name: str) -> Iterator[str]:
    """A database of its own with the demo province in it (for tests that write through a served process)."""
    _drop(server_url, name)
    url = create_database(server_url, name, f"{make_url(demo_url).database}_template")
    try:
        yield url
    finally:
        _drop(server_url, name)


def table_snapshot(engine: Engine, table: str) -> tuple[int, str]:
    """Row count and a digest of every row: equal snapshots mean the table did not change."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') FROM {table} t")
        ).one()
    return int(row[0]), str(row[1])


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``gis-ioc ARGS`` in this process as a user would; returns (exit code, stdout, stderr)."""

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["gis-ioc", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as done:
            code = int(done.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(database_url: str, home: Path, port: int | None = None, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[str]:
    """``gis-ioc serve`` in its own process on a free loopback port, or ``port`` (real clients; GDAL holds
    the GIL while it fetches, so a server in the test's own process could not answer it). ``env`` adds
    settings; ``log`` keeps the server's output."""
    port = port or free_port()
    env = {**os.environ, "GIS_IOC_DATABASE_URL": database_url, "GIS_IOC_HOME": str(home), "GIS_IOC_PORT": str(port),
           **(env or {})}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "gis_ioc", "serve"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if log:
            out.close()  # type: ignore[union-attr]
