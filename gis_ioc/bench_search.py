"""gis-ioc bench search: what operators type, through HTTP, in process and as the same SQL in pgbench (figures)."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg2.extensions
import sqlalchemy as sa

from gis_ioc import db, search
from gis_ioc.bench import serve_for_bench
from gis_ioc.bench_sql import ms_stats, pgbench_replay_ms
from gis_ioc.settings import Settings

FIXED = {
    "roads": ["QL14", "ql 14", "quốc lộ 14", "ĐT676", "đường tỉnh 671"],
    "facilities": ["bệnh viện Kon Tum", "benh vien da khoa", "công an tỉnh", "truong tieu hoc"],
    "cameras": ["CAM-00012", "cam 00145", "CAM-01999"],
    "coordinates": ["14.35, 108.0", "108.0 14.35", "14°21'00\"N 108°00'10\"E", "1587000 555000"],
}


def typed_forms(name: str) -> list[str]:
    """A name as operators type it: as written, without diacritics, with GADM's Ð, in capitals, with a typo."""
    folded = search.fold(name)
    words = folded.split(" ")
    i = max(range(len(words)), key=lambda n: len(words[n]))
    j = words[i].find("k") if "k" in words[i] else len(words[i]) // 2
    letter = "c" if words[i][j] == "k" else chr((ord(words[i][j]) - 96) % 26 + 97)
    typo = " ".join([*words[:i], words[i][:j] + letter + words[i][j + 1:], *words[i + 1:]])
    return [name, folded, name.upper().replace("Đ", "\u00d0"), name.upper(), typo]


def _literal(sql: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        v = params[match.group(1)]
        if isinstance(v, list):
            return "ARRAY[" + ",".join(psycopg2.extensions.adapt(x).getquoted().decode() for x in v) + "]::text[]"
        return "NULL" if v is None else psycopg2.extensions.adapt(v).getquoted().decode()

    return re.sub(r"(?<![:\w]):(\w+)", value, sql)


def _http_ms(base_url: str, texts: list[str], runs: int) -> list[float]:
    """``GET /search?q=…`` as the desk sends it, one at a time on one kept-alive connection."""
    import httpx

    ms = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for text in texts:  # warm
            client.get("/search", params={"q": text})
        for _ in range(runs):
            for text in texts:
                started = time.perf_counter()
                response = client.get("/search", params={"q": text})
                ms.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
    return ms


def search_bench(settings: Settings, runs: int = 20, port: int = 8097) -> list[dict[str, Any]]:
    """p50/p99 per kind of query: HTTP, in process and the same SQL through pgbench.

    ``GET /search`` on a server it starts, ``search.search`` in process (one connection, warm), and its SQL
    alone through pgbench.
    """
    url = db.database_url(settings)
    engine = db.make_engine(url, pool_size=1)
    db.migrate(engine, settings.migrations_dir)
    with engine.connect() as conn:
        names = list(conn.execute(sa.text("SELECT DISTINCT name FROM admin_units WHERE level = 'commune' "
                                          "ORDER BY name LIMIT 30")).scalars())
    queries = {"places (30 communes, 5 ways)": [f for n in names for f in typed_forms(n)], **FIXED}
    rows = []
    server = serve_for_bench(settings, port, {"GIS_IOC_WARM_TILES": "false"})
    try:
        with engine.connect() as conn:
            for kind, texts in queries.items():
                http = _http_ms(f"http://127.0.0.1:{port}", texts, runs)
                for text in texts:  # warm: plans and pages in cache, as a desk that has been searching
                    search.search(conn, text, region=settings.region_extent)
                ours: list[float] = []
                for _ in range(runs):
                    for text in texts:
                        started = time.perf_counter()
                        search.search(conn, text, region=settings.region_extent)
                        ours.append((time.perf_counter() - started) * 1000)
                statements = []
                for text in texts:
                    if kind == "coordinates":
                        continue
                    q = search.parse(text)
                    params = {"kinds": ["unit", "facility", "road", "camera"], "folded": q.folded, "name": q.name,
                              "unit_type": q.unit_type, "road": q.road, "code": q.code,
                              "incident_id": q.incident_id, "near_lon": None, "near_lat": None, "limit": 10}
                    statements.append(_literal(search.RANKED.format(found=search.PLACES), params))
                sql = pgbench_replay_ms(url, statements, runs * len(statements), "search") if statements else []
                rows.append({"queries": kind, "texts": len(texts), "http": ms_stats(http), "gis-ioc": ms_stats(ours),
                             "sql": ms_stats(sql) if sql else None})
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()
    return rows
