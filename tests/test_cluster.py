"""The private PostGIS cluster: created on first use, reused, stopped; never run as root."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg2
import pytest

from gis_ioc import cluster
from gis_ioc.cluster import PrivateCluster
from gis_ioc.errors import DatabaseUnavailable


def _owner(pid_file: Path) -> str:
    pid = int(pid_file.read_text().splitlines()[0])
    uid = os.stat(f"/proc/{pid}").st_uid
    return pwd.getpwuid(uid).pw_name


@pytest.mark.skipif(os.environ.get("GIS_IOC_TEST_DATABASE_URL") is not None, reason="an external database is used")
def test_cluster_lifecycle_in_a_new_home(tmp_path, run_cli):
    home = tmp_path / "home"
    private = PrivateCluster(home)
    assert private.status()["created"] is False
    try:
        url = private.ensure_running()
        assert private.status()["running"]
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            cur.execute("SELECT postgis_lib_version(), current_setting('jit'), "
                        "current_setting('shared_preload_libraries')")
            version, jit, preloaded = cur.fetchone()
        assert version.startswith("3.") and jit == "off"
        assert preloaded == "pg_prewarm"  # the pages in use come back after a restart (Debian's server has it)
        if os.geteuid() == 0:
            assert _owner(private.data_dir / "postmaster.pid") == cluster.RUN_AS_WHEN_ROOT
        assert private.ensure_running() == url  # reused, same port and password
        assert (home / "cluster.json").stat().st_mode & 0o077 == 0  # the password file is private
    finally:
        assert private.stop() is True
    assert private.status()["running"] is False
    assert private.stop() is False
    code, out, _ = run_cli("db", "status", env={"GIS_IOC_HOME": str(home), "GIS_IOC_DATABASE_URL": ""})
    assert code == 0 and "stopped" in out
    assert private.status()["running"] is False  # issue 11: a status never starts the cluster
    url_again = private.ensure_running()  # started again from the same folder
    try:
        with psycopg2.connect(url_again) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        private.remove()
    assert not private.data_dir.exists()


def test_missing_postgres_names_the_packages(monkeypatch):
    monkeypatch.setattr(cluster, "find_postgres", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DatabaseUnavailable, match="install the packages postgresql postgresql-postgis"):
        cluster.ensure_postgres_installed()


def test_missing_postgis_names_the_package(monkeypatch):
    monkeypatch.setattr(cluster, "find_postgres", lambda: cluster.PostgresInstall(Path("/usr/bin"), False))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DatabaseUnavailable, match="PostGIS not found"):
        cluster.ensure_postgres_installed()


def test_a_foreign_data_folder_is_left_alone(tmp_path):
    home = tmp_path / "home"
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "precious.txt").write_text("not ours")
    with pytest.raises(DatabaseUnavailable, match="not an empty folder nor a gis-ioc cluster"):
        PrivateCluster(home).ensure_running()
    assert (home / "pgdata" / "precious.txt").read_text() == "not ours"
