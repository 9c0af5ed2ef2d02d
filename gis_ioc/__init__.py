"""gis-ioc: the spatial operations service of a provincial Intelligent Operations Center."""

__version__ = "0.1.0"
