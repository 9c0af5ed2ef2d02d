"""`gis-ioc load` handed to the running server (load_service): same checks, same report, nothing else trusted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid

import pytest
import sqlalchemy as sa

from gis_ioc import db, load_service
from gis_ioc.errors import IngestError
from gis_ioc.ingest import rows, store
from gis_ioc.paths import Place
from gis_ioc.settings import Settings

from .conftest import _create_from_template, _drop, served, table_snapshot
from .factories import sample, write


def _count(engine, table: str) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


def _ask(path, line: bytes) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """Send one raw line to the load socket; the JSON lines it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(line)
        with sock.makefile("rb") as stream:
            return [json.loads(answer) for answer in stream]


def test_the_command_hands_its_file_to_the_running_server(db_url, engine, tmp_path, run_cli):
    home = tmp_path / "home"
    env = {"GIS_IOC_DATABASE_URL": db_url, "GIS_IOC_HOME": str(home)}
    good = write(sample("cameras"), "gpkg", tmp_path, "good")
    bad = write(sample("cameras").assign(fov_deg=["wide", "60", "90"]), "gpkg", tmp_path, "bad")
    with served(db_url, home):
        assert (home / "run" / "load.sock").exists()
        code, out, err = run_cli("load", str(good), "--layer", "cameras", env=env)
        assert code == 0, err
        assert "running server" in out and "3" in out
        assert _count(engine, "cameras") == 3
        before = table_snapshot(engine, "cameras")
        code, out, err = run_cli("load", str(bad), "--layer", "cameras", env=env)
        assert code == 2 and "Traceback" not in out + err
        assert err.startswith("gis-ioc: error: column 'fov_deg': not a number") and len(err.strip().splitlines()) == 1
        assert table_snapshot(engine, "cameras") == before  # nothing changed
        code, out, err = run_cli("load", str(tmp_path / "missing.gpkg"), "--layer", "cameras", env=env)
        assert code == 2 and "no such file" in err
        code, out, err = run_cli("load", str(good), "--layer", "cameras", "--local", env=env)
        assert code == 0 and "running server" not in out
        assert _count(engine, "cameras") == 6
    assert not (home / "run" / "load.sock").exists()  # removed when the server stops


def test_the_command_reaches_the_server_before_importing_the_cli(db_url, engine, tmp_path):
    """``gis-ioc load`` as typed: the quick path (gis_ioc.entry) hands the file over; errors are one line."""
    home = tmp_path / "home"
    env = {**os.environ, "GIS_IOC_DATABASE_URL": db_url, "GIS_IOC_HOME": str(home)}
    good = write(sample("cameras"), "gpkg", tmp_path, "good")
    probe = ("import sys, runpy; sys.argv = ['gis-ioc', *sys.argv[1:]]; "
             "from gis_ioc.entry import main\ntry:\n    main()\nfinally:\n"
             "    print('typer' in sys.modules, 'pydantic' in sys.modules, 'pandas' in sys.modules, file=sys.stderr)")
    with served(db_url, home):
        done = subprocess.run([sys.executable, "-c", probe, "load", str(good), "--layer", "cameras", "--set",
                               "status=online"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "running server" in done.stdout and _count(engine, "cameras") == 3
        assert done.stderr.strip().splitlines()[-1] == "False False False"  # nothing heavy was imported
        done = subprocess.run([sys.executable, "-m", "gis_ioc", "load", str(tmp_path / "nope.gpkg"), "-l", "cameras"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and done.stderr.strip() == f"gis-ioc: error: {tmp_path / 'nope.gpkg'}: no such file"
        done = subprocess.run([sys.executable, "-m", "gis_ioc", "load", str(good), "--layer", "cameras", "--mode",
                               "sideways"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and "--mode: 'sideways' is not one of" in done.stderr  # the full CLI said it
        assert "Traceback" not in done.stderr


def test_the_quick_path_takes_the_options_the_load_command_declares():
    import typer

    from gis_ioc.cli import app
    from gis_ioc.entry import load_parser

    command = typer.main.get_command(app).commands["load"]  # type: ignore[attr-defined]
    declared = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]
                if opt.startswith("-")} - {"--help"}
    taken = {opt for action in load_parser()._actions for opt in action.option_strings}
    assert declared == taken


def test_a_server_of_another_database_is_not_used(server_url, db_url, engine, tmp_path, run_cli):
    """Same home, another database: the server declines and the command loads into its own database."""
    home = tmp_path / "home"
    name = f"gis_ioc_test_other_{uuid.uuid4().hex[:8]}"
    other = _create_from_template(server_url, name)
    other_engine = db.make_engine(other, pool_size=1)
    try:
        with served(db_url, home):
            code, out, err = run_cli("load", str(write(sample("cameras"), "gpkg", tmp_path)), "--layer", "cameras",
                                     env={"GIS_IOC_DATABASE_URL": other, "GIS_IOC_HOME": str(home)})
            assert code == 0, err
            assert "running server" not in out
        assert _count(other_engine, "cameras") == 3 and _count(engine, "cameras") == 0
    finally:
        other_engine.dispose()
        _drop(server_url, name)


def test_a_socket_left_behind_is_ignored(db_url, engine, tmp_path, run_cli):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(home / "run" / "load.sock"))  # bound, never listening: as a server that died leaves it
    left.close()
    code, out, err = run_cli("load", str(write(sample("cameras"), "gpkg", tmp_path)), "--layer", "cameras",
                             env={"GIS_IOC_DATABASE_URL": db_url, "GIS_IOC_HOME": str(home)})
    assert code == 0, err
    assert _count(engine, "cameras") == 3


@pytest.mark.parametrize("environ", [
    {},
    {"GIS_IOC_HOME": "/srv/ioc", "GIS_IOC_DATABASE_URL": "postgresql://u:secret@db:5433/ioc"},
    {"gis_ioc_home": "/srv/other", "Gis_Ioc_Layers_Dir": "/srv/layers", "GIS_IOC_PORT": "9000"},
])
def test_the_command_finds_home_and_database_as_the_settings_do(monkeypatch, environ):
    for key in [k for k in os.environ if k.upper().startswith("GIS_IOC_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    place = Place.from_environment()
    assert place == Settings().place
    assert "secret" not in json.dumps(load_service.identity(place))


@pytest.fixture
def service(settings, catalog, db_url):  # type: ignore[no-untyped-def]
    with load_service.serving(settings, catalog, db_url) as running:
        assert running is not None
        yield running


def test_the_socket_answers_garbage_and_goes_on(service, settings, engine, tmp_path):
    """Whatever arrives on the socket gets an answer and changes nothing; the next load works."""
    path = service.path
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    identity = load_service.identity(settings.place)
    for line, expected in (
        (b"not json\n", "not JSON"),
        (b"x" * (load_service.MAX_REQUEST_BYTES + 10) + b"\n", "too long"),
        (json.dumps({"protocol": 1, "identity": identity, "file": 5, "layer": "cameras"}).encode() + b"\n",
         "file: a text is expected"),
        (json.dumps({"protocol": 1, "identity": identity, "file": "/nope.gpkg", "layer": "cameras",
                     "map": ["a"]}).encode() + b"\n", "--map"),
        (json.dumps({"protocol": 1, "identity": identity, "file": "/nope.gpkg", "layer": "nope"}).encode() + b"\n",
         "no layer 'nope'"),
    ):
        answers = _ask(path, line)
        assert len(answers) == 1 and "error" in answers[0] and expected in answers[0]["error"]["message"], answers
    assert _ask(path, json.dumps({"protocol": 99}).encode() + b"\n") == [{"declined": "another version of gis-ioc"}]
    assert _ask(path, json.dumps({"protocol": 1, "identity": {"database": "x"}}).encode() + b"\n")[0]["declined"]
    report = load_service.load_via_server(settings.place, {"file": str(write(sample("cameras"), "gpkg", tmp_path)),
                                                           "layer": "cameras"})
    assert report is not None and report.by_server and report.rows_loaded == 3
    with pytest.raises(IngestError, match="unknown column"):
        load_service.load_via_server(settings.place, {"file": str(write(sample("incidents"), "gpkg", tmp_path, "i")),
                                                      "layer": "cameras"})


def test_a_command_that_goes_away_cancels_its_load(service, settings, engine, tmp_path, monkeypatch):
    """The load stops at its next progress line and rolls back; the layer is as it was."""
    monkeypatch.setattr(store, "SMALL_CHUNK_ROWS", 1)
    monkeypatch.setattr(load_service, "PROGRESS_EVERY_S", 0.0)
    started, go_on = threading.Event(), threading.Event()
    real_check = rows.check_rows

    def slow_check(frame, plan, offset=0):  # type: ignore[no-untyped-def]
        if offset == 1:
            started.set()
            go_on.wait(30)
        return real_check(frame, plan, offset)

    monkeypatch.setattr(store, "check_rows", slow_check)
    before = table_snapshot(engine, "cameras")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(service.path))
    sock.sendall(json.dumps({"protocol": 1, "identity": load_service.identity(settings.place), "layer": "cameras",
                             "file": str(write(sample("cameras"), "gpkg", tmp_path))}).encode() + b"\n")
    assert started.wait(30)
    sock.close()  # the command is interrupted
    go_on.set()
    for _ in range(100):  # the service gives its connection back when the load has been rolled back
        if not service._one_at_a_time.locked():
            break
        threading.Event().wait(0.1)
    assert not service._one_at_a_time.locked()
    assert table_snapshot(engine, "cameras") == before
