"""Load files into layers: read (pyogrio) → prepare (columns, CRS, validity) → load (COPY) → record.

A load is one transaction beside the readers: they see the old rows until it commits, then the new
ones, and a failure leaves the layer exactly as it was. One module per stage: ``read``, ``prepare``,
``load``, and ``create`` (a new layer from a file).
"""

from gis_ioc.ingest.create import MAX_NEW_LAYER_ID, import_layer
from gis_ioc.ingest.read import open_source, read_batches, read_file
from gis_ioc.ingest.rows import Plan, Prepared, Rows, _convert, _fix_geometry_types, check_rows, plan_load, prepare
from gis_ioc.ingest.store import (
           MODES,
           LoadReport,
           Mode,
           Progress,
           _chunks_of,
           _csv_chunks,
           load,
           load_frame,
           write_rows,
)

__all__ = ["MAX_NEW_LAYER_ID", "MODES", "LoadReport", "Mode", "Plan", "Prepared", "Progress", "Rows", "_chunks_of",
           "_convert", "_csv_chunks", "_fix_geometry_types", "check_rows", "import_layer", "load", "load_frame",
           "open_source", "plan_load", "prepare", "read_batches", "read_file", "write_rows"]
