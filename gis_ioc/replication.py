"""A primary and a streaming standby on this machine, to try read replicas and failover (tests, ``bench failover``).

Two private clusters under one folder: the primary with the demo province at a small scale, and a hot standby
copied from it with ``pg_basebackup -R``. Commits wait for the standby to flush them (PostgreSQL's synchronous
replication, switched on after the copy so the standby, once promoted, waits for nobody): what the primary
acknowledged survives its death.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gis_ioc import auth, db, demo
from gis_ioc.catalog import Catalog
from gis_ioc.cluster import PrivateCluster
from gis_ioc.paths import DEFAULT_LAYERS_DIR, PROJECT_ROOT

REF_TIME = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


class ReplicaPair:
    """A primary and its standby, each a private cluster of its own under ``root``."""

    def __init__(self, root: Path) -> None:
        self.primary = PrivateCluster(root / "primary")
        self.standby = PrivateCluster(root / "standby")
        self.primary_url = ""
        self.standby_url = ""
        self.key = ""  # an operator's API key

    def make(self, scale: float = 0.02) -> None:
        """Start the primary with the demo at ``scale``, copy it into the standby, then make commits synchronous."""
        self.primary_url = self.primary.ensure_running()
        engine = db.make_engine(self.primary_url, pool_size=1)
        try:
            db.migrate(engine, PROJECT_ROOT / "db")
            demo.load_demo(engine, Catalog.from_folder(DEFAULT_LAYERS_DIR, engine), scale=scale, ref_time=REF_TIME)
            self.key = auth.create_key(engine, "operator-replica-pair", "operator")
        finally:
            engine.dispose()
        self.standby_url = self.standby.make_standby(self.primary)
        self.sql(self.primary_url, "ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()")

    @property
    def failover_url(self) -> str:
        """Both hosts; libpq connects to the one that accepts writes."""
        p, s = make_url(self.primary_url), make_url(self.standby_url)
        return (f"postgresql://{p.username}:{p.password}@{p.host}:{p.port},{s.host}:{s.port}/{p.database}"
                "?target_session_attrs=read-write")

    @staticmethod
    def sql(url: str, *statements: str) -> list[Any]:
        """Run ``statements`` in autocommit; the first row of each (None for those without rows)."""
        engine = db.make_engine(url, pool_size=1)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                results = [conn.execute(sa.text(s)) for s in statements]
                return [r.first() if r.returns_rows else None for r in results]
        finally:
            engine.dispose()

    def remove(self) -> None:
        """Stop both and delete their data."""
        for cluster in (self.standby, self.primary):
            cluster.remove()
