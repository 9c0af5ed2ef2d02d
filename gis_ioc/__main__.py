"""``python -m gis_ioc`` is the ``gis-ioc`` command."""

from gis_ioc.entry import main

main()
