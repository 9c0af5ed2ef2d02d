"""CAP 1.2 over HTTP (``gis_ioc.cap``): an incident as an alert (``?f=cap`` on the item) and ``/alerts.atom``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gis_ioc import cap
from gis_ioc.catalog import Catalog, Layer, quote_table
from gis_ioc.errors import InvalidInput, NotFound
from gis_ioc.settings import Settings
from gis_ioc.web.deps import CatalogDep, ReadEngineDep, SettingsDep

router = APIRouter(tags=["Alerts"])
MAX_ENTRIES = 500


def sender(settings: Settings) -> cap.Sender:
    """The alerts' sender, from the settings."""
    return cap.Sender(settings.cap_sender, settings.cap_sender_name, settings.timezone)


def alert_response(request: Request, engine: Any, settings: Settings, layer: Layer, key: Any,
                   headers: dict[str, str]) -> Response:
    """One feature of an incidents layer as a CAP document (``f=cap``)."""
    if not cap.supports(layer.properties):
        raise InvalidInput(f"f: layer {layer.id!r} is not a layer of incidents; CAP is offered for incidents",
                           param="f")
    with engine.connect() as conn:
        rows = cap.incident_rows(conn, quote_table(layer.table), settings.timezone,
                                 f"i.{layer.id_column} = :key", {"key": key})
    if not rows:
        raise NotFound(f"layer {layer.id!r} has no feature {key!r}", param="featureId")
    web = str(request.url_for("item", collection_id=layer.id, feature_id=str(key)))
    headers = {k: v for k, v in headers.items() if k != "Content-Crs"}
    return Response(cap.alert(rows[0], sender(settings), web), media_type=cap.MEDIA, headers=headers)


def _incidents(catalog: Catalog) -> Layer:
    layer = catalog.get("incidents")
    if not cap.supports(layer.properties):
        raise NotFound("no incidents layer to publish alerts from", param="collectionId")
    return layer


@router.get("/alerts.atom", summary="Active alerts (Atom feed of CAP 1.2 alerts)", operation_id="getAlertsFeed",
            response_class=Response,
            responses={200: {"content": {cap.ATOM_MEDIA: {}}, "description": "Atom feed; each entry links to "
                                                                             "the incident's CAP document"}})
def alerts_feed(
    request: Request,
    engine: ReadEngineDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    severity: Annotated[Literal["unknown", "minor", "moderate", "severe", "extreme"], Query(
        description="Least severity listed (CAP's scale)")] = "moderate",
    limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES, description="Entries, newest change first")] = 100,
) -> Response:
    """Active incidents (new, verified, dispatched, in progress, reopened) at or above a severity."""
    layer = _incidents(catalog)
    wanted = list(cap.SEVERITIES[cap.SEVERITIES.index(severity):])
    with engine.connect() as conn:
        rows = cap.incident_rows(conn, quote_table(layer.table), settings.timezone,
                                 f"i.status = ANY(:active) AND i.severity = ANY(:wanted) AND {layer.events_only('i')}",
                                 {"active": list(cap.ACTIVE), "wanted": wanted}, limit=limit)
    item = str(request.url_for("item", collection_id=layer.id, feature_id="{id}")).replace("%7Bid%7D", "{id}")
    body = cap.feed(rows, sender(settings), str(request.url), item + "?f=cap", severity)
    return Response(body, media_type=cap.ATOM_MEDIA)
