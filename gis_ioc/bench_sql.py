"""The SQL side of the benchmarks: the very statements a call sent, replayed through pgbench or psql.

What gis-ioc adds is its time over these: ``pgbench_replay_ms`` replays captured statements one per
transaction (``-M simple``, planned each call, or ``-M prepared``, the floor for statements the server
prepares); ``psql_ms`` times one statement in psql. ``ms_stats`` sums up times alike on both sides.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gis_ioc import db


def ms_stats(ms: list[float]) -> dict[str, float]:
    """How many, median and 99th percentile of times in milliseconds."""
    ordered = sorted(ms)
    return {"n": len(ordered), "p50_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


MAX_PGBENCH_SCRIPTS = 128  # pgbench's own limit on -f files


def pgbench_replay_ms(url: str, scripts: list[str], transactions: int, name: str, prepared: bool = False,
                      ) -> list[float]:
    """Each script's latency through pgbench, in ms: one random script per transaction, one client.

    The scripts (SQL with its values inlined; several statements separated by ``;`` are one script) wait in a
    table ``gis_ioc_bench_<name>`` for the run, and are gone after it. ``prepared``: each script is a file of
    its own, run with ``-M prepared`` (each statement planned once per connection: the floor for statements a
    server prepares), at most ``MAX_PGBENCH_SCRIPTS`` of them.
    """
    import tempfile

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    if prepared:
        if len(scripts) > MAX_PGBENCH_SCRIPTS:
            raise ValueError(f"pgbench takes at most {MAX_PGBENCH_SCRIPTS} scripts ({len(scripts)} given)")
        with tempfile.TemporaryDirectory(prefix="gis-ioc-pgbench-") as tmp:
            files = []
            for i, text in enumerate(scripts):
                files += ["-f", str(Path(tmp) / f"{name}_{i}.sql")]
                Path(files[-1]).write_text(text.strip().rstrip(";") + ";\n")
            return _pgbench_ms(["pgbench", "-n", "-M", "prepared", *files, "-c", "1", "-j", "1"], libpq, tmp,
                               len(scripts), transactions, once_each=True)
    table = f"gis_ioc_bench_{name}"
    engine = db.make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text(f"CREATE TABLE {table} (i int PRIMARY KEY, q text NOT NULL)"))
            conn.execute(sa.text(f"INSERT INTO {table} (i, q) VALUES (:i, :q)"),
                         [{"i": i + 1, "q": q.strip()} for i, q in enumerate(scripts)])
        with tempfile.TemporaryDirectory(prefix="gis-ioc-pgbench-") as tmp:
            script = Path(tmp) / f"{name}.pgbench"
            script.write_text(f"\\set i random(1, {len(scripts)})\n"
                              f"SELECT q FROM {table} WHERE i = :i \\gset\n:q\n")
            return _pgbench_ms(["pgbench", "-n", "-M", "simple", "-f", str(script), "-c", "1", "-j", "1"], libpq,
                               tmp, len(scripts), transactions)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def _pgbench_ms(base: list[str], libpq: str, tmp: str, warm: int, transactions: int, once_each: bool = False,
                ) -> list[float]:
    """Each transaction's ms: ``base`` (a pgbench command) run ``warm`` times, then ``transactions`` logged.

    ``once_each``: a script's first transaction on the logged run's connection is not counted (it prepares the
    script's statements); as many more are run.
    """
    subprocess.run([*base, "-t", str(warm), libpq], capture_output=True, check=True)
    more = warm if once_each else 0
    subprocess.run([*base, "-t", str(transactions + more), "-l", "--log-prefix", f"{tmp}/txlog", libpq],
                   capture_output=True, text=True, check=True)
    seen: set[str] = set()
    times = []
    for log in Path(tmp).glob("txlog*"):
        for line in log.read_text().splitlines():
            fields = line.split()  # client, transaction, µs, script, …
            if not once_each or fields[3] in seen:
                times.append(int(fields[2]) / 1000)
            seen.add(fields[3])
    return times[:transactions]


def psql_ms(url: str, sql: str, runs: int) -> list[float]:
    """Times of the same SQL run by psql (its timing switch), in seconds."""
    import re

    args = ["psql", url, "-X", "-q", "-o", "/dev/null", "-c", "\\timing on"]
    for _ in range(runs):
        args += ["-c", sql]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return [float(m) / 1000 for m in re.findall(r"Time: ([\d.]+) ms", done.stdout)]
