"""The private PostGIS cluster gis-ioc runs when no database URL is given.

Created on first use in ``<home>/pgdata`` from the system's PostgreSQL binaries, started on
demand on a free loopback port, reused across runs and stopped by ``gis-ioc db stop``.
PostgreSQL refuses to run as root, so when gis-ioc runs as root the cluster runs as Debian's
``postgres`` system user, which owns the data folder. Password authentication (a random
password kept in ``<home>/cluster.json``, mode 600) protects it from other local users.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gis_ioc.errors import DatabaseUnavailable

SUPERUSER = "gis_ioc"
DATABASE = "gis_ioc"
APT_PACKAGES = ("postgresql", "postgresql-postgis")
RUN_AS_WHEN_ROOT = "postgres"
FALLBACK_ROOT = Path("/var/lib/gis-ioc/clusters")

# Settings for a single-machine service; JIT and parallel query slow tile and feature
# queries down on small machines (see DESIGN.md, Performance).
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "200",
    "shared_buffers": "'512MB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'4GB'",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
    "random_page_cost": "1.1",
    "timezone": "'UTC'",
    "log_min_messages": "warning",
}


@dataclass(frozen=True)
class PostgresInstall:
    """Where the PostgreSQL server binaries are, and whether PostGIS is installed for them."""

    bindir: Path
    has_postgis: bool

    def tool(self, name: str) -> str:
        """Full path of one server binary (``initdb``, ``pg_ctl``…)."""
        return str(self.bindir / name)


def find_postgres() -> PostgresInstall | None:
    """The newest PostgreSQL server found (Debian layout first, then PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for bindir in candidates:
        path = Path(bindir)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return PostgresInstall(path, _has_postgis(path))
    return None


def _has_postgis(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    sharedirs = []
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
        sharedirs.append(out.stdout.strip())
    # Debian: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
    sharedirs.append(f"/usr/share/postgresql/{bindir.parent.name}")
    return any(Path(d, "extension", "postgis.control").exists() for d in sharedirs if d)


def ensure_postgres_installed() -> PostgresInstall:
    """Find PostgreSQL with PostGIS; as root on Debian/Ubuntu install them with apt."""
    found = find_postgres()
    if found and found.has_postgis:
        return found
    packages = " ".join(APT_PACKAGES)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise DatabaseUnavailable(f"apt-get install {packages} failed: {last}")
        found = find_postgres()
        if found and found.has_postgis:
            return found
    what = "PostgreSQL and PostGIS" if not found else "PostGIS"
    raise DatabaseUnavailable(
        f"{what} not found: install the packages {packages} (Debian/Ubuntu), "
        "or set GIS_IOC_DATABASE_URL to an existing PostGIS database"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class PrivateCluster:
    """A PostgreSQL cluster owned by gis-ioc in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).resolve()
        self.state_file = self.home / "cluster.json"

    @property
    def server_dir(self) -> Path:
        """Where the server's own files live.

        That is ``<home>`` itself, unless gis-ioc runs as root and the ``postgres`` user cannot reach
        it (a home under /root, a private temp folder); then a folder of its own under
        /var/lib/gis-ioc, recorded in ``cluster.json``.
        """
        recorded = self._state().get("server_dir")
        return Path(recorded) if recorded else self.home

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data folder."""
        return self.server_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.server_dir / "log" / "postgresql.log"

    def _reachable_by_server_user(self, path: Path) -> bool:
        if self._run_as() is None:
            return True
        return self._run(["test", "-x", str(path)], check=False).returncode == 0

    # -- who runs the server -------------------------------------------------------------
    def _run_as(self) -> pwd.struct_passwd | None:
        """The unprivileged user to run PostgreSQL as (None: the current user)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError as err:
            raise DatabaseUnavailable(
                f"running as root needs the system user '{RUN_AS_WHEN_ROOT}' to run PostgreSQL "
                "(it comes with Debian's postgresql package), or set GIS_IOC_DATABASE_URL"
            ) from err

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._run_as()
        kwargs: dict = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            env["HOME"] = user.pw_dir
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd="/", check=False, **kwargs
        )
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise DatabaseUnavailable(
                f"{Path(args[0]).name} failed: {detail[-1] if detail else 'exit ' + str(done.returncode)}"
                f" (log: {self.log_file})"
            )
        return done

    def _chown(self, path: Path) -> None:
        user = self._run_as()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        """The state (with the database password) written as the service's user's alone, from its first byte."""
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "cluster.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def exists(self) -> bool:
        """Whether the cluster has been created."""
        return (self.data_dir / "PG_VERSION").exists() and bool(self._state().get("password"))

    def running_port(self) -> int | None:
        """The port of the running server, or None when it is not running."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (FileNotFoundError, PermissionError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port if _port_in_use(port) else None

    def url(self, port: int, database: str = DATABASE) -> str:
        """Connection URL for a database of this cluster."""
        password = quote(self._state()["password"], safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------
    def _init(self, install: PostgresInstall) -> None:
        user = self._run_as()
        server_dir = self.home
        if not self._reachable_by_server_user(self.home):
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
            server_dir = FALLBACK_ROOT / digest
            server_dir.mkdir(parents=True, exist_ok=True)
            if (server_dir / "pgdata").exists():
                shutil.rmtree(server_dir / "pgdata")  # a half-made cluster of this home, never a foreign one
        self._save_state({"server_dir": str(server_dir)})
        for folder in (self.data_dir, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            self._chown(folder)
        if user is not None and not self._reachable_by_server_user(self.data_dir):
            raise DatabaseUnavailable(f"{self.data_dir} must be reachable by the user {user.pw_name}")
        password = secrets.token_urlsafe(24)
        with tempfile.NamedTemporaryFile("w", dir=self.log_file.parent, delete=False) as pw:
            pw.write(password + "\n")
        pw_path = Path(pw.name)
        self._chown(pw_path)
        try:
            self._run(
                [
                    install.tool("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                    "--auth-host=scram-sha-256", "--auth-local=peer", f"--pwfile={pw_path}",
                    "-E", "UTF8", "--locale=C.UTF-8",
                ]
            )
        finally:
            pw_path.unlink(missing_ok=True)
        settings = dict(SERVER_SETTINGS)
        if (install.bindir.parent / "lib" / "pg_prewarm.so").exists():
            # after a restart (a reboot above all) the pages in use before are read back at once, in order, not
            # one at a time as requests ask for them: autoprewarm, with the server's contrib modules
            settings["shared_preload_libraries"] = "'pg_prewarm'"
        conf = "\n".join(f"{k} = {v}" for k, v in settings.items())
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write(f"\n# gis-ioc private cluster\n{conf}\n")
        self._save_state({"server_dir": str(server_dir), "password": password, "port": _free_port()})

    def ensure_running(self) -> str:
        """Create and start the cluster if needed; return the URL of the gis_ioc database."""
        with self._lock():
            port = self.running_port()
            if port is None:
                install = ensure_postgres_installed()
                if not self.exists:
                    half_made = bool(self._state()) and not self._state().get("password")
                    if half_made and self.data_dir.exists():
                        shutil.rmtree(self.data_dir)  # our own earlier attempt that failed
                    elif self.data_dir.exists() and any(self.data_dir.iterdir()):
                        raise DatabaseUnavailable(
                            f"{self.data_dir} is not an empty folder nor a gis-ioc cluster; move it away"
                        )
                    self._init(install)
                state = self._state()
                port = int(state.get("port") or _free_port())
                if _port_in_use(port):
                    port = _free_port()
                state["port"] = port
                self._save_state(state)
                self._run(
                    [
                        install.tool("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                        "-o", f"-p {port}", "-w", "-t", "60", "start",
                    ]
                )
            self._create_database(port)
            return self.url(port)

    def _create_database(self, port: int) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(self.url(port, "postgres"))
        except psycopg2.OperationalError as err:
            raise DatabaseUnavailable(f"cannot connect to the private cluster: {err}".strip()) from err
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()

    def make_standby(self, primary: PrivateCluster) -> str:
        """Create this cluster as a streaming standby of the running ``primary`` and start it; its URL.

        ``pg_basebackup -R`` copies the primary and writes ``primary_conninfo``; the standby answers reads
        (hot standby) and follows the primary until ``promote``. The primary's superuser and password are the
        standby's (it is a copy).
        """
        port = primary.running_port()
        if port is None:
            raise DatabaseUnavailable(f"the primary cluster in {primary.home} is not running")
        with self._lock():
            if self.exists:
                raise DatabaseUnavailable(f"{self.home} has a cluster already; a standby needs an empty home")
            install = ensure_postgres_installed()
            server_dir = self.home
            if not self._reachable_by_server_user(self.home):
                server_dir = FALLBACK_ROOT / hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
                shutil.rmtree(server_dir / "pgdata", ignore_errors=True)
            self._save_state({"server_dir": str(server_dir)})
            for folder in (server_dir, self.data_dir, self.log_file.parent):
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o700)
                self._chown(folder)
            password = primary._state()["password"]
            conninfo = f"host=127.0.0.1 port={port} user={SUPERUSER} password={password} application_name=standby"
            self._run([install.tool("pg_basebackup"), "-D", str(self.data_dir), "-R", "-X", "stream",
                       "-c", "fast", "-d", conninfo])
            self._save_state({"server_dir": str(server_dir), "password": password, "port": _free_port()})
        return self.ensure_running()

    def promote(self) -> None:
        """Make this standby a primary (``pg_ctl promote``), waiting until it accepts writes."""
        install = find_postgres()
        if install is None:
            raise DatabaseUnavailable("PostgreSQL binaries not found: cannot promote the standby")
        self._run([install.tool("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "promote"])

    def kill(self) -> None:
        """Stop the server at once, as a machine that dies would (``pg_ctl stop -m immediate``)."""
        install = find_postgres()
        if install is None:
            raise DatabaseUnavailable("PostgreSQL binaries not found: cannot stop the cluster")
        self._run([install.tool("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"])

    def stop(self) -> bool:
        """Stop the server; return whether it was running."""
        with self._lock():
            if self.running_port() is None:
                return False
            install = find_postgres()
            if install is None:
                raise DatabaseUnavailable("PostgreSQL binaries not found: cannot stop the cluster")
            self._run([install.tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
            return True

    def remove(self) -> None:
        """Stop the server and delete the cluster with all its data."""
        self.stop()
        with self._lock():
            server_dir = self.server_dir
            for path in (server_dir / "pgdata", server_dir / "log"):
                shutil.rmtree(path, ignore_errors=True)
            if server_dir != self.home:
                shutil.rmtree(server_dir, ignore_errors=True)
            self.state_file.unlink(missing_ok=True)

    def status(self) -> dict:
        """What a user wants to know: created, running, port, data folder."""
        port = self.running_port()
        return {
            "data_dir": str(self.data_dir),
            "created": self.exists,
            "running": port is not None,
            "port": port,
            "log": str(self.log_file),
        }
