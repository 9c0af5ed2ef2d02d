"""Domain exceptions. Only the web layer maps them to HTTP statuses (``HTTP_STATUS``)."""

from __future__ import annotations


class GisIocError(Exception):
    """Base of every error gis-ioc reports to a user; ``str(err)`` is the user-facing message."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(GisIocError):
    """Something named by the user does not exist."""

    code = "not_found"


class LayerNotFound(NotFound):
    """No layer with that id in the catalog."""

    code = "layer_not_found"


class InvalidInput(GisIocError):
    """A parameter, field or file the user gave is wrong; ``param`` names it."""

    code = "invalid_input"


class IngestError(InvalidInput):
    """A file cannot be loaded into a layer; nothing was written."""

    code = "ingest_error"


class Unauthorized(GisIocError):
    """No valid API key was given."""

    code = "unauthorized"


class Forbidden(GisIocError):
    """The API key's role is too weak."""

    code = "forbidden"


class PreconditionFailed(GisIocError):
    """``If-Match`` named another version of the feature than the current one."""

    code = "precondition_failed"


class RequestTimeout(GisIocError):
    """The client stopped sending its request body."""

    code = "request_timeout"


class PayloadTooLarge(GisIocError):
    """A request body over the configured size."""

    code = "payload_too_large"


class CatalogError(GisIocError):
    """A layer definition is invalid."""

    code = "catalog_error"


class DatabaseUnavailable(GisIocError):
    """The database (or the private cluster) cannot be reached or started."""

    code = "database_unavailable"


class QueryTimeout(GisIocError):
    """A query ran past its request's statement timeout (or was cancelled when the client left)."""

    code = "timeout"


class Busy(GisIocError):
    """No capacity for this request now (heavy work queue full, or no free database connection)."""

    code = "busy"


class InternalError(GisIocError):
    """Something failed that should not have: logged with a traceback, answered without internals."""

    code = "internal_error"


class MigrationError(GisIocError):
    """The schema cannot be brought up to date."""

    code = "migration_error"


HTTP_STATUS: dict[type[GisIocError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    PreconditionFailed: 412,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    LayerNotFound: 404,
    NotFound: 404,
    IngestError: 400,
    InvalidInput: 400,
    CatalogError: 500,
    DatabaseUnavailable: 503,
    QueryTimeout: 503,
    Busy: 503,
    MigrationError: 500,
    GisIocError: 500,
}


def http_status(err: GisIocError) -> int:
    """The HTTP status for a domain error (most specific class wins)."""
    for cls in type(err).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def from_database(err: BaseException) -> GisIocError | None:
    """The domain error for a database failure the user cannot fix (None: a bug, to be logged).

    A statement timeout or cancellation is a ``QueryTimeout``; a connection that is gone, refused or
    shut down is ``DatabaseUnavailable``; an exhausted pool is ``Busy``.
    """
    import psycopg2
    import sqlalchemy.exc as sa_exc

    if isinstance(err, sa_exc.TimeoutError):
        return Busy("every database connection is busy; try again shortly")
    orig = getattr(err, "orig", err)
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return DatabaseUnavailable("the database connection was lost; try again shortly")
    if getattr(orig, "pgcode", None) == "57014":
        return QueryTimeout("the query ran past the time this request may take; narrow it (bbox, window, "
                            "filter) or use an API key")
    if isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError) or isinstance(
            err, sa_exc.DisconnectionError):
        return DatabaseUnavailable("the database is not reachable now; try again shortly")
    return None
