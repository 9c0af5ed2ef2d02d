/* gis-ioc map views: styles for the vector tile layers and the wall's live behaviour.
   Loaded before the map script; GisIocViews.startWall() runs after every layer exists. */
(function () {
  "use strict";
  var ACTIVE = {new: 1, verified: 1, dispatched: 1, in_progress: 1, reopened: 1};
  var cfg = {colors: {}, clusterBelow: {}, server: ""};
  var V = window.GisIocViews = {};

  function colour(layer, value, fallback) {
    var c = (cfg.colors[layer] || {})[value];
    return c || fallback;
  }
  function clusterRadius(n) { return Math.min(22, 4 + 2.2 * Math.log(n + 1)); }
  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  V.recentHours = 24;
  V.incidentStyle = function (p, z) {
    var c = colour("incidents", p.severity || "unknown", "#bdbdbd");
    if (p.cluster) {
      return {className: "gis-incident gis-cluster", radius: clusterRadius(p.count), fill: true, fillColor: c,
              fillOpacity: 0.55, color: c, opacity: 0.9, weight: 1.5};
    }
    if (ACTIVE[p.status]) {
      return {className: "gis-incident gis-active", radius: z >= 15 ? 11 : 8, fill: true, fillColor: c,
              fillOpacity: 1, color: "#ffffff", weight: 2.5};
    }
    // the live picture: what is active, and what ended within the last hours (V.recentHours); older history
    // is for the analyses, not for the wall (it made a grey soup over the city)
    var ended = Date.parse(p.closed_at || p.resolved_at || p.reported_at);
    if (!(Date.now() - ended < V.recentHours * 3600e3)) { return []; }
    return {className: "gis-incident gis-faded", radius: z >= 15 ? 6 : 4, fill: true, fillColor: c,
            fillOpacity: 0.3, color: c, opacity: 0.35, weight: 1};
  };

  V.cameraStyle = function (p, z) {
    var c = colour("cameras", p.status, "#2ecc71");
    if (p.cluster) {
      return {className: "gis-camera gis-cluster", radius: clusterRadius(p.count) * 0.8, fill: true, fillColor: c,
              fillOpacity: 0.55, color: c, weight: 1.5};
    }
    return {className: "gis-camera", radius: z >= 14 ? 7 : 5, fill: true, fillColor: c, fillOpacity: 0.95,
            color: "#0b1220", weight: 2};
  };

  V.infrastructureStyle = function (p, z) {
    var c = colour("infrastructure", p.kind, "#5dade2");
    if (p.kind === "river") {
      return {className: "gis-infra gis-river", color: c, weight: z >= 12 ? 4 : 2.5, opacity: 0.85, fill: false};
    }
    if (p.kind === "road") {
      var w = {national: 4, provincial: 3, district: 2}[p.road_class] || 2;
      return {className: "gis-infra gis-road", color: c, weight: z >= 12 ? w + 1 : w, opacity: 0.9, fill: false};
    }
    return {className: "gis-infra", radius: z >= 13 ? 7 : 5, fill: true, fillColor: c, fillOpacity: 0.9,
            color: "#0b1220", weight: 1.5};
  };

  // one vector tile layer carries infrastructure, cameras and incidents; the layer control switches each
  V.hidden = {};
  V.style = function (layer) {
    var styles = {incidents: V.incidentStyle, cameras: V.cameraStyle, infrastructure: V.infrastructureStyle};
    return function (p, z) { return V.hidden[layer] ? [] : styles[layer](p, z); };
  };
  var LAYER_OF_CLASS = {"gis-incident": "incidents", "gis-camera": "cameras", "gis-infra": "infrastructure"};

  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  function popupHtml(layer, p) {
    if (p.cluster) { return "<b>" + p.count + "</b> " + esc(layer) + " here — zoom in"; }
    var rows = "";
    Object.keys(p).forEach(function (k) {
      if (k !== "cluster" && k !== "count") { rows += "<tr><th>" + esc(k) + "</th><td>" + esc(p[k]) + "</td></tr>"; }
    });
    var link = layer === "incidents" ? '<p><a href="' + cfg.server + "/views/incidents/" + p.id +
      '" target="_blank">open the incident view</a></p>' : "";
    return "<table>" + rows + "</table>" + link;
  }

  V.startWall = function (map, parts, config) {
    cfg = config;
    var state = {map: map, grid: parts.grid, live: {incidents: {}, cameras: {}}, kpi: null, events: 0,
                 connected: false};
    window.gisIocWall = state;
    var container = map.getContainer();

    // names: districts always, communes from zoom 11
    function zoomClasses() {
      container.classList.toggle("gis-zoom-low", map.getZoom() < cfg.communeLabelsFromZoom);
    }
    map.on("zoomend", zoomClasses);
    zoomClasses();

    // first full render: the data tiles loaded and the KPIs shown (performance.now(), ms from navigation)
    var pending = {kpi: true, tiles: true};
    function done(what) {
      delete pending[what];
      if (!Object.keys(pending).length && !state.renderedMs) { state.renderedMs = Math.round(performance.now()); }
    }
    state.tileLoads = 0;  // every time the visible data tiles have all arrived
    // VectorGrid leaves a failed tile fetch unhandled; while the server restarts that is expected (the tiles are
    // drawn again on the reload that follows the reconnect), so it is counted rather than reported as an error
    state.failedFetches = 0;
    window.addEventListener("unhandledrejection", function (e) {
      if (e.reason instanceof TypeError) { state.failedFetches += 1; e.preventDefault(); }
    });
    parts.grid.on("load", function () { state.tileLoads += 1; done("tiles"); });
    // GridLayer.redraw() asks for tiles at a fractional zoom (9.75) when the map sits between zooms;
    // taking the layer off and on again asks at the tile zoom, as the first load does
    function redrawGrid() {
      map.removeLayer(parts.grid);
      parts.grid.addTo(map);
    }
    parts.grid.on("click", function (e) {
      var classes = ((e.layer && e.layer.options && e.layer.options.className) || "").split(" ");
      var layer = LAYER_OF_CLASS[classes[0]] || "features";
      L.popup().setLatLng(e.latlng).setContent(popupHtml(layer, e.layer.properties || {})).openOn(map);
    });
    function switched(e, on) {
      Object.keys(parts.switches).forEach(function (layer) {
        if (parts.switches[layer] === e.layer) { V.hidden[layer] = !on; redrawGrid(); }
      });
    }
    map.on("overlayadd", function (e) { switched(e, true); });
    map.on("overlayremove", function (e) { switched(e, false); });

    // camera fields of view, from zoom 13, for the cameras in view
    var fov = L.geoJSON(null, {pane: "fovPane", interactive: false, style: function (f) {
      var c = colour("cameras", f.properties.status, "#2ecc71");
      return {className: "gis-fov", color: c, weight: 1, opacity: 0.7, fillColor: c, fillOpacity: 0.18};
    }});
    fov.addTo(map);
    parts.control.addOverlay(fov, "Camera fields of view (zoom ≥ " + cfg.fovFromZoom + ")");
    var fovRequest = 0;
    function loadFov() {
      var mine = ++fovRequest;
      if (map.getZoom() < cfg.fovFromZoom || !map.hasLayer(fov)) { fov.clearLayers(); return; }
      var b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(5); });
      fetch(cfg.server + "/analysis/cameras/fov?limit=3000&bbox=" + bbox.join(","))
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && mine === fovRequest) { fov.clearLayers(); fov.addData(data); }
        })
        .catch(function () {});
    }
    map.on("moveend overlayadd", loadFov);
    loadFov();

    // live changes: the changed feature at once, its layer's tiles and the KPIs shortly after
    var live = L.layerGroup([], {pane: "livePane"}).addTo(map);
    parts.control.addOverlay(live, "Live changes");
    var redrawTiles = debounce(redrawGrid, 3000);
    var redraw = {incidents: redrawTiles, cameras: function () { redrawTiles(); loadFov(); }};
    var refreshKpi = debounce(loadKpi, 1500);

    function liveLayer(layer, feature, op) {
      var p = feature.properties || {};
      var style = layer === "incidents" ? V.incidentStyle(p, map.getZoom()) : V.cameraStyle(p, map.getZoom());
      style.className = "gis-live gis-live-" + layer + " gis-id-" + feature.id + (op === "insert" ? " gis-new" : "");
      style.pane = "livePane";
      style.radius = Math.max(style.radius || 8, 9);
      return L.geoJSON(feature, {
        pointToLayer: function (f, latlng) { return L.circleMarker(latlng, style); },
        style: function () { return style; }
      }).bindPopup(popupHtml(layer, p));
    }

    function onChange(ev) {
      state.events += 1;
      var c = JSON.parse(ev.data);
      if (c.op === "reload" || c.layer === "*") {
        live.clearLayers();
        state.live = {incidents: {}, cameras: {}};
        redrawGrid();
        loadFov();
        refreshKpi();
        return;
      }
      var known = state.live[c.layer];
      if (!known) { return; }
      if (known[c.id]) { live.removeLayer(known[c.id]); delete known[c.id]; }
      if (c.op !== "delete" && c.feature && c.feature.geometry) {
        known[c.id] = liveLayer(c.layer, c.feature, c.op).addTo(live);
      }
      redraw[c.layer]();
      refreshKpi();
    }

    function setLive(on, text) {
      state.connected = on;
      var el = document.getElementById("gis-live");
      if (el) { el.className = on ? "gis-live-on" : "gis-live-off"; el.textContent = text; }
    }
    function connect() {
      var es = new EventSource(cfg.server + "/events");
      es.onopen = function () { setLive(true, "LIVE"); };
      es.onerror = function () {
        setLive(false, "reconnecting…");
        if (es.readyState === EventSource.CLOSED) { setTimeout(connect, 3000); }  // the browser gave up: retry
      };
      es.addEventListener("change", onChange);
      state.source = es;
    }
    connect();

    // KPIs
    function bar(label, value, c) {
      return '<div class="gis-kpi-sev" style="--c:' + c + '"><span class="gis-kpi-n">' + value + "</span>" +
        esc(label) + "</div>";
    }
    function loadKpi() {
      fetch(cfg.server + "/views/wall/kpi.json", {cache: "no-store"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (k) {
          if (!k) { return; }
          if (k.stale) { setTimeout(loadKpi, 2000); }  // the last figures while new ones are made: ask again
          state.kpi = k;
          setTimeout(function () { done("kpi"); }, 0);
          var sev = "";
          ["extreme", "severe", "moderate", "minor"].forEach(function (s) {
            sev += bar(s, k.active_by_severity[s] || 0, colour("incidents", s, "#bdbdbd"));
          });
          var cams = k.cameras.online_pct === null ? "—" : k.cameras.online_pct.toFixed(1) + " %";
          var rows = "";
          k.top_communes.forEach(function (d) {
            rows += "<tr><td>" + esc((d.type ? d.type + " " : "") + d.name) + '</td><td class="num">' + d.count +
              "</td></tr>";
          });
          var body = document.querySelector("#gis-kpi .gis-kpi-body");
          body.innerHTML =
            '<div class="gis-kpi-big"><span id="gis-kpi-active" class="gis-kpi-n">' + k.active_total +
            "</span> active incidents</div>" + '<div class="gis-kpi-sevs">' + sev + "</div>" +
            '<div class="gis-kpi-big"><span id="gis-kpi-cameras" class="gis-kpi-n">' + cams + "</span> cameras online" +
            ' <span class="gis-muted">(' + k.cameras.online + " / " + k.cameras.total + ")</span></div>" +
            '<div class="gis-kpi-sub">Incidents, ' + esc(k.window.label) + ': <b id="gis-kpi-24h">' +
            k.window_total + "</b>" + (rows ? ' <span class="gis-muted">top communes</span>' : "") +
            "</div>" + (rows ? '<table class="gis-kpi-table">' + rows + "</table>" : "");
        })
        .catch(function () {});
    }
    loadKpi();
    setInterval(loadKpi, 60000);

    // clock in the province's time zone
    var timeFmt = new Intl.DateTimeFormat("en-GB", {timeZone: cfg.timezone, hour: "2-digit", minute: "2-digit",
                                                    second: "2-digit", hour12: false});
    var dateFmt = new Intl.DateTimeFormat("en-GB", {timeZone: cfg.timezone, weekday: "short", day: "2-digit",
                                                    month: "short", year: "numeric"});
    function tick() {
      var now = new Date();
      document.querySelector("#gis-clock .gis-time").textContent = timeFmt.format(now);
      document.querySelector("#gis-clock .gis-date").textContent = dateFmt.format(now) + " · " + cfg.timezone;
    }
    tick();
    setInterval(tick, 1000);

    state.counts = function () {
      function n(sel) { return container.querySelectorAll(sel).length; }
      return {admin: n("path.gis-admin"), incidents: n("path.gis-incident"), cameras: n("path.gis-camera"),
              infrastructure: n("path.gis-infra"), fov: n("path.gis-fov"), live: n("path.gis-live")};
    };
    state.ready = true;
  };
})();
