"""``python -m gis_ioc`` is the ``gis-ioc`` command."""

from gis_ioc.cli import main

main()
