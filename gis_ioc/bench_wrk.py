"""HTTP load from wrk (a C load generator, Debian's ``wrk``), for figures the Python client would cap.

The tile SQL limit is measured with pgbench, whose client costs next to nothing; the HTTP figures of
``bench.tiles_http_bench`` come from an asyncio httpx client on the same two cores, which spends about as much
CPU per request as the server does. wrk sends the same tile list (a Lua script walks it, one position per
thread), gzip accepted as browsers do, and reports requests/s and the latency percentiles, so the HTTP side
and the SQL side are measured alike. ``available()`` says whether it is installed (``make setup`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = """
local paths = {%s}
local position = 0
request = function()
  position = position %% #paths + 1
  return wrk.format("GET", paths[position], {["Accept-Encoding"] = "gzip"})
end
done = function(summary, latency, requests)
  io.write(string.format("gis-ioc requests %%d errors %%d p50_us %%d p99_us %%d\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
_RESULT = re.compile(r"gis-ioc requests (\d+) errors (\d+) p50_us (\d+) p99_us (\d+)")
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


def available() -> bool:
    """Whether wrk is installed."""
    return shutil.which("wrk") is not None


def load(base_url: str, paths: list[str], concurrency: int, seconds: float, warmup: float = 2) -> dict[str, float]:
    """``paths`` over and over on ``base_url`` at ``concurrency`` for ``seconds``: rate, p50, p99, errors."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make setup installs it)")
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    with tempfile.TemporaryDirectory(prefix="gis-ioc-wrk-") as folder:
        script = Path(folder, "paths.lua")
        script.write_text(SCRIPT % quoted)
        threads = str(max(1, min(2, concurrency)))
        common = [wrk, "-t", threads, "-c", str(concurrency), "--timeout", "30s", "-s", str(script)]
        if warmup > 0:
            subprocess.run([*common, "-d", f"{max(1, round(warmup))}s", base_url], capture_output=True, check=False)
        done = subprocess.run([*common, "-d", f"{max(1, round(seconds))}s", base_url], capture_output=True,
                              text=True, check=False)
    found, rate = _RESULT.search(done.stdout), _RATE.search(done.stdout)
    if done.returncode != 0 or found is None or rate is None:
        raise RuntimeError(f"wrk failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return {"concurrency": concurrency, "requests": int(found[1]), "rate": float(rate[1]),
            "p50_ms": int(found[3]) / 1000, "p99_ms": int(found[4]) / 1000, "errors": int(found[2])}


def tiles(base_url: str, layers: str, tiles_: list[tuple[int, int, int]], concurrency: tuple[int, ...],
          seconds: float) -> list[dict[str, float]]:
    """The tile list at each concurrency, as ``bench.tiles_http_bench`` measures it, from wrk."""
    paths = [f"/tiles/{layers}/{z}/{x}/{y}.mvt" for z, x, y in tiles_]
    return [load(base_url, paths, c, seconds) for c in concurrency]
