"""The operators' desk (``/views/desk``): find a place, log an incident, work the queue, merge duplicates.

One page beside the wall's map (the same vector tiles and boundaries, offline like the wall). Everything it
does goes through the public API with the operator's key in ``Authorization`` (kept in this tab's
``sessionStorage``: other sites cannot read it, and it is gone when the tab closes): search, the duplicate
preview while typing, creation, lifecycle steps with ``If-Match``, merges, history, nearest cameras and
facilities. It follows ``/events``, so the queue and the map move with every desk and the wall.
Keyboard first: ``/`` searches, ``n`` starts a new incident (Enter on a search result places it there),
``j``/``k`` walk the queue, ``1``–``4`` take the selected incident's next steps, Esc goes back.
"""

from __future__ import annotations

import json
from typing import Any

import folium
from branca.element import Element
from sqlalchemy.engine import Connection

from gis_ioc import edits, maps
from gis_ioc.catalog import Catalog
from gis_ioc.settings import Settings

PANEL = """
<div id="desk" class="desk" role="application" aria-label="Operators' desk">
  <form id="desk-signin" class="desk-box" hidden>
    <h2>Operators' desk</h2>
    <p>An operator key logs and works incidents. It stays in this tab only.</p>
    <input id="desk-key" type="password" autocomplete="off" placeholder="gioc_…" aria-label="API key">
    <button type="submit">Open the desk</button><p id="desk-signin-error" class="desk-error"></p>
  </form>
  <div id="desk-main" hidden>
    <div class="desk-box">
      <input id="desk-q" type="search" autocomplete="off" placeholder="Find a place, road, camera, #id (/)"
             aria-label="Search">
      <ol id="desk-results" class="desk-list" aria-label="Search results"></ol>
    </div>
    <form id="desk-form" class="desk-box" hidden aria-label="New incident">
      <h3>New incident <span id="desk-where" class="desk-muted"></span></h3>
      <label>Type <select id="f-type" name="type"></select><span class="desk-error" data-for="type"></span></label>
      <label>Severity <select id="f-severity" name="severity"></select>
        <span class="desk-error" data-for="severity"></span></label>
      <label>Source <select id="f-source" name="source"></select><span class="desk-error" data-for="source"></span>
      </label>
      <label>Title <input id="f-title" name="title" maxlength="500" autocomplete="off">
        <span class="desk-error" data-for="title"></span></label>
      <label>Description <textarea id="f-description" name="description" rows="2"></textarea>
        <span class="desk-error" data-for="description"></span></label>
      <span class="desk-error" data-for="geometry"></span>
      <div id="desk-dupes" class="desk-dupes" aria-live="polite"></div>
      <button type="submit" id="f-save">Save (Ctrl+Enter)</button> <button type="button" id="f-cancel">Cancel (Esc)
      </button>
    </form>
    <section class="desk-box"><h3>Active queue <span id="desk-count" class="desk-muted"></span>
      <span id="desk-live" class="gis-live-off">connecting…</span></h3>
      <ol id="desk-queue" class="desk-list" aria-label="Active incidents"></ol></section>
    <section id="desk-detail" class="desk-box" hidden aria-live="polite"></section>
    <p id="desk-message" class="desk-message" role="status"></p>
  </div>
</div>"""


def page(conn: Connection, catalog: Catalog, settings: Settings, *, server: str = "",
         since: str | None = None, versions: str | None = None) -> folium.Map:
    """The desk: the province's map with the wall's layers, and the desk's panel beside it.

    ``since``, ``versions``: as for the wall (``maps.wall``).
    """
    m = maps._base_map(settings, conn, "gis-ioc — operators' desk")
    for pane, z in (("fovPane", 425), ("dataPane", 430), ("livePane", 450)):
        folium.map.CustomPane(pane, z_index=z).add_to(m)
    admin = maps._admin_layers(m, conn)
    grids = maps.data_tiles(m, server)
    incidents = catalog.get("incidents", conn)
    props = incidents.properties
    config: dict[str, Any] = {
        "server": server, "timezone": settings.timezone,
        "types": props["type"].enum, "severities": props["severity"].enum, "sources": props["source"].enum,
        "lifecycle": {k: list(v) for k, v in edits.LIFECYCLE.items()},
        "active": list(maps.ACTIVE_STATUSES), "colors": maps._style_colours(incidents),
        "time": {"active": maps.time_filter(None), "ended": maps.ENDED_SINCE, "step": maps.TIME_STEP_MINUTES,
                 "hours": maps.LIVE_HOURS}, "since": since, "versions": versions,
    }
    root = maps._root(m)
    root.html.add_child(Element(PANEL))
    root.header.add_child(Element(f'<link rel="stylesheet" href="{server}/static/gis-ioc/desk.css">'), name="desk_css")
    root.html.add_child(Element(f'<script src="{server}/static/gis-ioc/desk.js"></script>'))
    maps._Script(f"GisIocDesk.start({m.get_name()}, {{grids: [{', '.join(grids.values())}], "
                 f"admin: {json.dumps(list(admin))}}}, {json.dumps(config)});").add_to(m)
    return maps._finish(m, "gis-desk", maps.Assets(server))
