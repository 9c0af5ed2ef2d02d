"""Where gis-ioc keeps things, known without reading the whole configuration (``gis_ioc.settings``).

``gis-ioc load`` asks the running server to load a file before anything heavy is imported: it needs
only the home (where the server's socket is), the database and the layer folder, read here from the
same ``GIS_IOC_*`` variables, with the same defaults, as ``Settings`` reads them (pydantic-settings
matches names without regard to case; so does this).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = PROJECT_ROOT / ".gis-ioc"
DEFAULT_LAYERS_DIR = PROJECT_ROOT / "layers"
ENV_PREFIX = "GIS_IOC_"


@dataclass(frozen=True)
class Place:
    """The home, database and layer folder a process works on."""

    home: Path
    database_url: str | None
    layers_dir: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Place:
        """As ``Settings()`` would find them in the environment."""
        found = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}

        def get(name: str) -> str | None:
            return found.get(ENV_PREFIX + name.upper())

        home, layers = get("home"), get("layers_dir")
        return cls(Path(home) if home is not None else DEFAULT_HOME, get("database_url"),
                   Path(layers) if layers is not None else DEFAULT_LAYERS_DIR)
