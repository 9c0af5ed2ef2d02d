"""Configuration: one ``Settings`` object, read from ``GIS_IOC_*`` environment variables.

Settings are built by the caller (CLI, app factory, tests) and passed in; nothing reads
the environment at import time.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gis_ioc.paths import DEFAULT_HOME, DEFAULT_LAYERS_DIR, PROJECT_ROOT, Place

# Kon Tum province, with a margin: data outside this box is "far outside the area".
KON_TUM_BBOX = (107.33, 13.92, 108.55, 15.42)
MAX_KEEP_MONTHS = 1200  # GIS_IOC_KEEP_MONTHS and `gis-ioc db archive --keep-months`: a hundred years at most


class Settings(BaseSettings):
    """Everything gis-ioc can be configured with (environment prefix ``GIS_IOC_``)."""

    model_config = SettingsConfigDict(env_prefix="GIS_IOC_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/PostGIS URL. Without it gis-ioc runs its own private cluster in `home`.",
    )
    replica_urls: str = Field(
        default="",
        description="Streaming standbys for reads (comma-separated URLs); writes and LISTEN stay on the primary.",
    )
    replica_max_lag_ms: int = Field(default=1000, ge=0, le=3_600_000,
                                    description="A replica further behind the primary than this is not read from.")
    home: Path = Field(default=DEFAULT_HOME,
                       description="Data folder: private cluster, caches (the same from any working directory).")
    keep_months: int | None = Field(
        default=None, ge=1, le=MAX_KEEP_MONTHS,
        description="Months the incidents layer keeps attached (this month and the ones before it); older months "
                    "move to the archive schema on their own, checked every few hours (as `gis-ioc db archive` does "
                    "by hand). Every attached month is planned by each request without a time window (docs/sizing.md"
                    "). Unset: every month stays.")
    order_months: bool = Field(
        default=False, description="Rewrite each closed month of incidents (ended before last month began) in "
                                   "spatial order on its own, checked every few hours (as `gis-ioc db order-months` "
                                   "does by hand); writes into that month wait while it is copied.")
    host: str = Field(default="127.0.0.1", description="Address the server listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the server listens on.")
    workers: int = Field(default=1, ge=1, le=64, description="Server worker processes.")
    public_read: bool = Field(default=True, description="Allow reads without an API key.")
    cors_origins: str = Field(default="*", description="Web origins that may call the API from a browser, "
                                                       "comma-separated; * for any, empty for none.")
    layers_dir: Path = Field(default=DEFAULT_LAYERS_DIR, description="Folder of layer YAML files.")
    styles_dir: Path = Field(default=PROJECT_ROOT / "tiles" / "styles", description="Folder of MapLibre styles.")
    migrations_dir: Path = Field(default=PROJECT_ROOT / "db", description="Folder of SQL migrations.")
    region_bbox: tuple[float, float, float, float] = Field(
        default=KON_TUM_BBOX, description="The province's extent (lon/lat); data must fall near it."
    )
    region_margin_deg: float = Field(
        default=0.5, ge=0, description="How far outside `region_bbox` data may lie, in degrees."
    )
    gzip_level: int = Field(default=1, ge=0, le=9, description="gzip level of JSON, GeoJSON, CSV and HTML responses "
                                                              "for clients that accept it (0: none; 1-3: ISA-L's "
                                                              "levels, 4-9: zlib's).")
    tile_cache: bool = Field(default=True, description="Keep tiles in memory and under home/tiles.")
    tile_cache_mb: int = Field(default=1024, ge=1, le=10_000_000,
                               description="Largest size of the tile disk cache; least recently used tiles, and tiles "
                                           "of old layer versions first, are removed beyond it.")
    warm_tiles: bool = Field(default=True, description="Make the wall's first tiles (zooms 8-11) at start.")
    max_body_bytes: int = Field(default=200 * 1024 * 1024, ge=1024, description="Largest request body or upload.")
    timezone: str = Field(default="Asia/Ho_Chi_Minh", description="Local time zone of the province.")
    pool_size: int = Field(default=4, ge=1, le=200, description="Database connections per process (a hard cap).")
    statement_timeout_ms: int = Field(default=10_000, ge=100, le=3_600_000,
                                      description="Longest query of a request without an API key, in ms.")
    keyed_statement_timeout_ms: int = Field(default=120_000, ge=100, le=86_400_000,
                                            description="Longest query of a request with a valid API key, in ms.")
    heavy_concurrency: int = Field(default=2, ge=1, le=64,
                                   description="Heavy requests (analysis, statistics, map views, exports, imports) "
                                               "at once per process; the other connections stay free for tiles, "
                                               "items and events.")
    loop_lane: bool = Field(default=True,
                            description="Routes by road without a key run on the event loop over a connection of "
                                        "their own (one more per process); off: in a worker thread from the pool.")
    header_timeout_s: float = Field(default=10.0, gt=0, le=300,
                                    description="Seconds a client has to send a request's line and headers.")
    send_stall_s: float = Field(default=30.0, gt=0, le=600,
                                description="Seconds a client may leave an answer unread before its connection "
                                            "is dropped (and the bytes held for it freed).")
    max_unread_mb: int = Field(default=256, ge=1, le=16_384,
                               description="MiB of answers a process holds for clients that do not read them; past "
                                           "it the connection that stopped reading first is dropped.")
    basemap_url: str | None = Field(
        default=None, description="Raster basemap tile URL ({z}/{x}/{y}) under the map views (none: our layers only)."
    )
    basemap_attribution: str = Field(default="", description="Attribution shown for the basemap.")
    cap_sender: str = Field(default="ioc.kontum.gov.vn", pattern=r"^[^\s,<&]+$", max_length=200,
                            description="CAP sender of the incidents' alerts: globally unique, e.g. the IOC's "
                                        "domain name (no spaces or commas).")
    cap_sender_name: str = Field(default="Trung tâm Giám sát, điều hành thông minh tỉnh Kon Tum", max_length=200,
                                 description="Who the alerts come from, as people read it.")

    @property
    def place(self) -> Place:
        """The home, database and layer folder (``paths.Place``, as a process that has no settings reads them)."""
        return Place(self.home, self.database_url, self.layers_dir)

    @property
    def cors_origin_list(self) -> list[str]:
        """``cors_origins`` as a list (empty: no cross-origin access)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @field_validator("replica_urls")
    @classmethod
    def _replica_urls_are_database_urls(cls, value: str) -> str:
        for url in _split_urls(value):
            if not re.match(r"^postgres(?:ql)?(?:\+psycopg2)?://", url):
                raise ValueError(f"{url[:80]!r} is not a PostgreSQL URL (postgresql://user:password@host:port/db)")
        return value

    @property
    def replica_url_list(self) -> list[str]:
        """``replica_urls`` as a list."""
        return _split_urls(self.replica_urls)

    @property
    def heavy_slots(self) -> int:
        """Heavy requests at once: ``heavy_concurrency``, leaving at least one connection for light ones."""
        return max(1, min(self.heavy_concurrency, self.pool_size - 1))

    @property
    def region_extent(self) -> tuple[float, float, float, float]:
        """``region_bbox`` widened by ``region_margin_deg``: data outside it is refused."""
        xmin, ymin, xmax, ymax = self.region_bbox
        m = self.region_margin_deg
        return (xmin - m, ymin - m, xmax + m, ymax + m)


def _split_urls(text: str) -> list[str]:
    """Comma-separated URLs, split before each scheme, so a URL that names several hosts (a,b) stays whole."""
    return [u.strip() for u in re.split(r",\s*(?=postgres(?:ql)?(?:\+\w+)?://)", text) if u.strip()]
