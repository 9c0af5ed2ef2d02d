"""gis-ioc: the spatial operations service of a provincial Intelligent Operations Center.

From Python: ``ws = gis_ioc.connect()`` (see ``gis_ioc.workspace``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gis_ioc.settings import Settings
    from gis_ioc.workspace import Workspace

__version__ = "0.1.0"


def connect(settings: Settings | None = None) -> Workspace:
    """A ``Workspace`` on the layers, through the same ``GIS_IOC_*`` settings as the server."""
    from gis_ioc.workspace import Workspace  # imported here: the CLI starts without geopandas

    return Workspace(settings)
