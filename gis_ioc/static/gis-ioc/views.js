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
      if (p.road_class === "track") {  // a track to a village or a post: thin and dashed, from zoom 11
        return z < 11 ? [] : {className: "gis-infra gis-road gis-track", color: c, weight: 1.2, opacity: 0.7,
                              dashArray: "4 4", fill: false};
      }
      var w = {national: 4, provincial: 3, district: 2, urban: 2}[p.road_class] || 2;
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

  // a cluster's count, written on it: VectorGrid draws circles only, so each tile's SVG gets a <text> beside
  // every cluster it draws (the tiles on both sides of a border carry the same whole cluster, and its count)
  function shortCount(n) {
    if (n >= 10000) { return Math.round(n / 1000) + "k"; }
    if (n >= 1000) { return (Math.round(n / 100) / 10) + "k"; }
    return String(n);
  }
  V.tileRenderer = function (coords, size, options) {
    var renderer = L.svg.tile(coords, size, options);
    var addPath = renderer._addPath;
    renderer._addPath = function (layer) {
      var area = layer instanceof L.Polygon && /\bgis-incident\b/.test(layer.options.className || "");
      if (area) {  // an incident's area: outlined and lightly filled, under the points, never a disc over them
        var active = /\bgis-active\b/.test(layer.options.className);
        layer.options = L.extend({}, layer.options, {color: layer.options.fillColor, weight: active ? 2 : 1,
                                                     opacity: active ? 0.9 : 0.35, fillOpacity: active ? 0.18 : 0.05});
        this._updateStyle(layer);
        this._rootGroup.insertBefore(layer._path, this._rootGroup.firstChild);
        this._layers[L.stamp(layer)] = layer;
        return;
      }
      addPath.call(this, layer);
      var p = layer.properties || {};
      if (!p.cluster || !(p.count > 1) || !layer._point) { return; }
      var text = L.SVG.create("text");
      text.setAttribute("x", layer._point.x);
      text.setAttribute("y", layer._point.y);
      text.setAttribute("class", "gis-cluster-count");
      text.setAttribute("font-size", Math.max(10, Math.min(15, (layer._radius || 8) * 0.8)));
      text.textContent = shortCount(p.count);
      this._rootGroup.appendChild(text);
    };
    return renderer;
  };

  // the incidents' time filter (CQL2, as maps.time_filter makes it): active ones, and those that ended within
  // the last hours, from a start taken down to a step so that every wall asks for the same cached tiles
  V.timeFilter = function (time, hours) {
    if (hours === null) { return time.active; }
    var step = time.step * 60e3;
    var since = new Date(Math.floor(Date.now() / step) * step - hours * 3600e3);
    return time.active + " OR " + time.ended.split("{since}").join(since.toISOString().replace(".000Z", "Z"));
  };

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

  // a replay: every incident of a past window as a dot on one canvas, drawn as it stood at any minute (active
  // then: full colour with a white ring; ended in the 24 h before: faded), the map moving as usual
  var DAY = 24 * 3600e3;
  var ReplayLayer = L.Layer.extend({
    initialize: function (items) { this._items = items; this._at = 0; this.shown = {active: 0, ended: 0}; },
    onAdd: function (map) {
      this._canvas = L.DomUtil.create("canvas", "gis-replay leaflet-zoom-hide");
      map.getPane("livePane").appendChild(this._canvas);
      map.on("moveend zoomend resize", this._reset, this);
      this._reset();
    },
    onRemove: function (map) {
      L.DomUtil.remove(this._canvas);
      map.off("moveend zoomend resize", this._reset, this);
    },
    _reset: function () {
      var map = this._map, size = map.getSize();
      L.DomUtil.setPosition(this._canvas, map.containerPointToLayerPoint([0, 0]));
      this._canvas.width = size.x;
      this._canvas.height = size.y;
      this._xy = this._items.map(function (it) { return map.latLngToContainerPoint(it.at); });
      this.draw(this._at);
    },
    draw: function (t) {
      this._at = t;
      if (!this._canvas) { return this.shown; }
      var ctx = this._canvas.getContext("2d"), items = this._items, xy = this._xy, shown = {active: 0, ended: 0};
      var big = this._map.getZoom() >= 13 ? 6 : 4;
      ctx.clearRect(0, 0, this._canvas.width, this._canvas.height);
      [false, true].forEach(function (activePass) {
        for (var i = 0; i < items.length; i += 1) {
          var it = items[i];
          if (it.from > t) { continue; }
          var active = it.to > t;
          if (active !== activePass || (!active && t - it.to > DAY)) { continue; }
          ctx.beginPath();
          ctx.arc(xy[i].x, xy[i].y, active ? big : 3, 0, 2 * Math.PI);
          ctx.globalAlpha = active ? 1 : 0.35;
          ctx.fillStyle = it.colour;
          ctx.fill();
          if (active) { ctx.lineWidth = 1.5; ctx.strokeStyle = "#ffffff"; ctx.stroke(); }
          shown[active ? "active" : "ended"] += 1;
        }
      });
      ctx.globalAlpha = 1;
      this.shown = shown;
      return shown;
    }
  });

  function middle(geometry) {  // a point's place, or the middle of a shape's box
    var lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
    (function walk(c) {
      if (typeof c[0] === "number") {
        lo = [Math.min(lo[0], c[0]), Math.min(lo[1], c[1])];
        hi = [Math.max(hi[0], c[0]), Math.max(hi[1], c[1])];
      } else { c.forEach(walk); }
    })(geometry.coordinates);
    return L.latLng((lo[1] + hi[1]) / 2, (lo[0] + hi[0]) / 2);
  }

  // names that would overlap another are hidden, the larger unit's kept (data-rank: lower first); again
  // after every zoom and move, as the names' places on the screen change
  V.declutter = function (map) {
    var container = map.getContainer();
    function run() {
      var labels = Array.prototype.slice.call(container.querySelectorAll(".gis-label"));
      labels.forEach(function (el) { el.classList.remove("gis-label-hidden"); });
      var placed = [], pad = 3;
      labels.map(function (el) { return {el: el, rank: Number(el.dataset.rank || 1e9), box: el.getBoundingClientRect()}; })
        .filter(function (l) { return l.box.width > 0; })
        .sort(function (a, b) { return a.rank - b.rank; })
        .forEach(function (l) {
          var b = l.box;
          var clash = placed.some(function (p) {
            return b.left < p.right + pad && b.right > p.left - pad && b.top < p.bottom + pad && b.bottom > p.top - pad;
          });
          if (clash) { l.el.classList.add("gis-label-hidden"); } else { placed.push(b); }
        });
    }
    map.on("zoomend moveend resize", run);
    setTimeout(run, 0);
  };

  // whether the layer versions a stream's hello says are newer than those a page was served with (none: no),
  // of every table or of those in ``tables``
  V.newer = function (heard, served, tables) {
    if (!heard || !served) { return false; }
    return Object.keys(heard).some(function (table) {
      return (!tables || tables.indexOf(table) >= 0) && heard[table] > (served[table] || 0);
    });
  };

  // A kept page's live stream (the wall's, the desk's): from the last change heard before the page was served
  // (``since``: nothing falls between the page's reads and its stream), and after the browser gave up, from the
  // last event the page heard. ``on.live(bool)``: the LIVE sign; ``on.change(event)``: each change;
  // ``on.missed()``: what happened cannot be told (a plain start after being away, a restart; or on another
  // process than the page's when a layer changed since the page was served, by its ``versions``): draw again.
  V.follow = function (server, since, versions, on) {
    var lastId = since || null, connects = 0;
    function connect() {
      var resumed = connects++ > 0;
      var es = new EventSource(server + "/events" + (lastId ? "?since=" + encodeURIComponent(lastId) : ""));
      es.onopen = function () { on.live(true); };
      es.onerror = function () {
        on.live(false);
        if (es.readyState === EventSource.CLOSED) { setTimeout(connect, 3000); }  // the browser gave up: retry
      };
      es.addEventListener("hello", function (ev) {
        lastId = ev.lastEventId || lastId;
        var hello = JSON.parse(ev.data);
        if (!hello.resumed && (resumed || V.newer(hello.versions, versions))) { on.missed(); }
      });
      es.addEventListener("change", function (ev) { lastId = ev.lastEventId || lastId; on.change(ev); });
    }
    connect();
  };

  V.startWall = function (map, parts, config) {
    cfg = config;
    var grids = parts.grids;
    var state = {map: map, grids: grids, live: {incidents: {}, cameras: {}}, kpi: null, events: 0,
                 connected: false, hours: cfg.time.hours, infrastructureChanges: 0, reachLoads: 0};
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
    var loaded = {};
    Object.keys(grids).forEach(function (part) {
      grids[part].on("load", function () {
        state.tileLoads += 1;
        loaded[part] = true;
        if (loaded.base && loaded.incidents) { done("tiles"); }
      });
      grids[part].on("click", function (e) {
        var classes = ((e.layer && e.layer.options && e.layer.options.className) || "").split(" ");
        var layer = LAYER_OF_CLASS[classes[0]] || "features";
        L.popup().setLatLng(e.latlng).setContent(popupHtml(layer, e.layer.properties || {})).openOn(map);
      });
    });
    // GridLayer.redraw() asks for tiles at a fractional zoom (9.75) when the map sits between zooms;
    // taking the layer off and on again asks at the tile zoom, as the first load does. The incidents' tiles
    // take the time filter as it is now (its start moves in steps).
    function redrawGrid(part) {
      (part ? [part] : Object.keys(grids)).forEach(function (name) {
        var grid = grids[name];
        if (name === "incidents") { grid.options.filter = encodeURIComponent(V.timeFilter(cfg.time, state.hours)); }
        if (!map.hasLayer(grid)) { return; }  // a replay has it off
        map.removeLayer(grid);
        grid.addTo(map);
      });
    }
    var PART_OF = {incidents: "incidents", cameras: "base", infrastructure: "base"};
    function switched(e, on) {
      Object.keys(parts.switches).forEach(function (layer) {
        if (parts.switches[layer] === e.layer) { V.hidden[layer] = !on; redrawGrid(PART_OF[layer]); }
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

    // the fire stations' reach by road (15 and 30 minutes), off until switched on; asked for when switched on
    var REACH_COLOURS = {"15": "#1a9850", "30": "#91cf60"};
    var reachLayer = L.geoJSON(null, {pane: "fovPane", interactive: false, style: function (f) {
      var c = REACH_COLOURS[f.id] || "#d9ef8b";
      return {className: "gis-reach", color: c, weight: 1, opacity: 0.8, fillColor: c, fillOpacity: 0.25};
    }});
    parts.control.addOverlay(reachLayer, "Fire stations' reach by road (15, 30 min)");
    function loadReach() {
      fetch(cfg.server + "/analysis/reach?layer=infrastructure&filter=" + encodeURIComponent("kind = 'fire_station'") +
            "&minutes=15,30&by_commune=false")
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data) { reachLayer.clearLayers(); reachLayer.addData(data.features.slice().reverse()); }
          state.reachLoads += 1;
        })
        .catch(function () {});
    }
    map.on("overlayadd", function (e) {
      if (e.layer !== reachLayer || reachLayer.getLayers().length) { return; }
      loadReach();
    });
    // the stations or the roads changed: the areas are asked for again (now if shown, else when switched on)
    var refreshReach = debounce(function () {
      if (map.hasLayer(reachLayer)) { loadReach(); } else { reachLayer.clearLayers(); }
    }, 3000);
    state.reach = reachLayer;

    // live changes: the changed feature at once, its layer's tiles and the KPIs shortly after
    var live = L.layerGroup([], {pane: "livePane"}).addTo(map);
    parts.control.addOverlay(live, "Live changes");
    var redrawIncidents = debounce(function () { redrawGrid("incidents"); }, 3000);
    var redrawBase = debounce(function () { redrawGrid("base"); }, 3000);
    var redraw = {incidents: redrawIncidents, cameras: function () { redrawBase(); loadFov(); },
                  infrastructure: function () { redrawBase(); refreshReach(); }};
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
        refreshReach();
        return;
      }
      if (c.layer === "infrastructure") { state.infrastructureChanges += 1; redraw.infrastructure(); return; }
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
    V.follow(cfg.server, cfg.since, cfg.versions, {
      live: function (on) { setLive(on, on ? "LIVE" : "reconnecting…"); },
      change: onChange,
      missed: function () { onChange({data: JSON.stringify({layer: "*", id: null, op: "reload", feature: null})}); }
    });

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
          var rows = "", named = {};
          k.top_communes.forEach(function (d) { named[d.name] = (named[d.name] || 0) + 1; });
          k.top_communes.forEach(function (d) {  // two communes of one name: their codes tell them apart
            rows += "<tr><td>" + esc((d.type ? d.type + " " : "") + d.name) +
              (named[d.name] > 1 ? ' <span class="gis-muted">' + esc(d.code) + "</span>" : "") +
              '</td><td class="num">' + d.count + "</td></tr>";
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

    // -- time: the window of the live picture, and replays of the last day or week
    var dayFmt = new Intl.DateTimeFormat("en-GB", {timeZone: cfg.timezone, weekday: "short", day: "2-digit",
                                                   month: "short", hour: "2-digit", minute: "2-digit", hour12: false});
    function $(id) { return document.getElementById(id); }
    function iso(ms) { return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"); }
    V.recentHours = state.hours;
    $("gis-window").addEventListener("change", function (e) {
      state.hours = e.target.value === "" ? null : Number(e.target.value);
      V.recentHours = state.hours === null ? 0 : state.hours;
      redrawGrid("incidents");
    });
    setInterval(function () {  // the window's start moves on in steps: then ask for the new step's tiles
      if (encodeURIComponent(V.timeFilter(cfg.time, state.hours)) !== grids.incidents.options.filter) {
        redrawGrid("incidents");
      }
    }, 60e3);

    var MAX_REPLAY = 100000;
    var replay = {on: false, layer: null, timer: null, start: 0, end: 0, at: 0, loading: false};
    state.replay = replay;
    function showAt(t) {
      replay.at = t;
      $("gis-at").value = String(t);
      var shown = replay.layer ? replay.layer.draw(t) : {active: 0, ended: 0};
      $("gis-at-label").textContent = dayFmt.format(new Date(t)) + " · " + shown.active + " active, " +
        shown.ended + " ended in the 24 h before";
    }
    function pause() {
      clearInterval(replay.timer);
      replay.timer = null;
      $("gis-play").textContent = "▶ Play";
    }
    function play() {
      if (replay.at >= replay.end) { showAt(replay.start); }
      $("gis-play").textContent = "❚❚ Pause";
      replay.timer = setInterval(function () {
        var t = Math.min(replay.end, replay.at + Number($("gis-speed").value) * 60e3 / 10);
        showAt(t);
        if (t >= replay.end) { pause(); }
      }, 100);
    }
    function note(text) { $("gis-replay-note").textContent = text; }
    function load(url, items, done) {  // the items API, page after page, as any client reads it
      fetch(url).then(function (r) {
        if (!r.ok) { throw new Error("the server answered " + r.status); }
        return r.json();
      }).then(function (page) {
        page.features.forEach(function (f) {
          if (!f.geometry) { return; }
          var p = f.properties, end = Date.parse(p.resolved_at || p.closed_at || "");
          items.push({at: middle(f.geometry), from: Date.parse(p.reported_at), to: isNaN(end) ? Infinity : end,
                      colour: colour("incidents", p.severity || "unknown", "#bdbdbd")});
        });
        var next = (page.links || []).filter(function (l) { return l.rel === "next"; })[0];
        if (page.numberMatched > MAX_REPLAY) {
          throw new Error(page.numberMatched + " incidents in this view and window: more than " + MAX_REPLAY +
                          " — zoom in, or replay the last 24 h");
        }
        note("loading… " + items.length + (page.numberMatched ? " of " + page.numberMatched : ""));
        if (next && replay.loading) { load(next.href, items, done); } else { done(null); }
      }).catch(function (err) { done(err); });
    }
    function startReplay(hours) {
      if (replay.loading) { return; }
      var end = Date.now(), start = end - hours * 3600e3, b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(5); });
      // every incident alive at some minute of the window, or ended within the 24 h before its start
      var since = "TIMESTAMP('" + iso(start - DAY) + "')";
      var filter = "reported_at <= TIMESTAMP('" + iso(end) + "') AND status <> 'rejected' AND merged_into IS NULL " +
        "AND (resolved_at >= " + since + " OR (resolved_at IS NULL AND (closed_at IS NULL OR closed_at >= " + since +
        ")))";
      var url = cfg.server + "/collections/incidents/items?f=json&limit=10000&bbox=" + bbox.join(",") +
        "&properties=severity,status,reported_at,resolved_at,closed_at&filter=" + encodeURIComponent(filter);
      replay.loading = true;
      $("gis-replay").hidden = false;
      note("loading…");
      var items = [];
      load(url, items, function (err) {
        replay.loading = false;
        if (err) { note("No replay: " + err.message); return; }
        replay.on = true;
        replay.start = start;
        replay.end = end;
        map.removeLayer(grids.incidents);
        map.removeLayer(live);
        if (replay.layer) { map.removeLayer(replay.layer); }
        replay.layer = new ReplayLayer(items).addTo(map);
        $("gis-at").min = String(start);
        $("gis-at").max = String(end);
        $("gis-at").step = "60000";
        $("gis-speed").value = hours > 24 ? "180" : "30";
        document.body.classList.add("gis-replaying");
        note("Replay of the last " + (hours > 24 ? hours / 24 + " days" : hours + " h") + ": " + items.length +
             " incidents in this view (each at its place, shapes at their middle); the KPIs stay live");
        showAt(start);
        play();
      });
    }
    function backToLive() {
      pause();
      replay.loading = false;
      if (replay.layer) { map.removeLayer(replay.layer); replay.layer = null; }
      replay.on = false;
      $("gis-replay").hidden = true;
      document.body.classList.remove("gis-replaying");
      grids.incidents.addTo(map);
      live.addTo(map);
      redrawGrid("incidents");
    }
    Array.prototype.forEach.call(document.querySelectorAll("[data-replay]"), function (button) {
      button.addEventListener("click", function () { startReplay(Number(button.dataset.replay)); });
    });
    $("gis-play").addEventListener("click", function () { if (replay.timer) { pause(); } else { play(); } });
    $("gis-at").addEventListener("input", function (e) { pause(); showAt(Number(e.target.value)); });
    $("gis-back").addEventListener("click", backToLive);
    state.incidentsFilter = function () { return decodeURIComponent(grids.incidents.options.filter); };
    state.replayTo = function (t) { pause(); showAt(t); return replay.layer ? replay.layer.shown : null; };

    state.counts = function () {
      function n(sel) { return container.querySelectorAll(sel).length; }
      return {admin: n("path.gis-admin"), incidents: n("path.gis-incident"), cameras: n("path.gis-camera"),
              infrastructure: n("path.gis-infra"), fov: n("path.gis-fov"), live: n("path.gis-live")};
    };
    state.ready = true;
  };

  // One incident's view, kept live: its ETAs follow the clock, and the page is made again (keeping the map's
  // view) when the incident changes or one of its cameras does, or a camera comes within its circle, or
  // infrastructure that can change its answers does (a station of a kind it routes from, a road, anything
  // within its circle).
  var LIVE_TABLES = ["public.incidents", "public.cameras", "public.infrastructure"];

  V.startIncident = function (map, opts) {
    var fmt = new Intl.DateTimeFormat("en-GB", {hour: "2-digit", minute: "2-digit", hourCycle: "h23",
                                                timeZone: opts.timezone});
    var state = window.gisIocIncident = {map: map, events: 0, reloading: false, loadedAt: Date.now()};
    var kept = "gis-ioc-view:" + location.pathname;
    try {  // the view before a reload made for a change: put back
      var was = JSON.parse(sessionStorage.getItem(kept) || "null");
      sessionStorage.removeItem(kept);
      if (was && Date.now() - was.at < 60e3) { map.setView(was.center, was.zoom, {animate: false}); }
    } catch (e) { /* no session storage: the page's own view */ }

    function tick() {
      Array.prototype.forEach.call(document.querySelectorAll("[data-eta-s]"), function (el) {
        el.textContent = fmt.format(new Date(Date.now() + 1000 * Number(el.getAttribute("data-eta-s"))));
      });
    }
    tick();
    setInterval(tick, 15e3);

    var shown = {};
    (opts.cameras || []).forEach(function (id) { shown[String(id)] = true; });
    var here = L.latLng(opts.lat, opts.lon);
    var routeKinds = {};
    (opts.route_kinds || []).forEach(function (k) { routeKinds[k] = true; });
    function concerns(c) {
      if (c.op === "reload" || c.layer === "*") { return true; }
      if (c.layer === "incidents") { return String(c.id) === String(opts.id); }
      if (c.layer === "infrastructure") {
        if (!c.feature || !c.feature.geometry) { return true; }  // too big for the message: unknown
        if (routeKinds[String((c.feature.properties || {}).kind)]) { return true; }
        return L.geoJSON(c.feature).getBounds().intersects(here.toBounds(2 * opts.radius_m));
      }
      if (c.layer !== "cameras") { return false; }
      if (shown[String(c.id)]) { return true; }
      var g = c.feature && c.feature.geometry;
      return !!(g && g.type === "Point" && here.distanceTo(L.latLng(g.coordinates[1], g.coordinates[0])) <=
                opts.radius_m);
    }
    function reloadSoon() {  // at most one reload every opts.every_s: a busy camera does not keep the page blank
      if (state.reloading) { return; }
      state.reloading = true;
      var wait = Math.max(500, opts.every_s * 1000 - (Date.now() - state.loadedAt));
      setTimeout(function () {
        try {
          var c = map.getCenter();
          sessionStorage.setItem(kept, JSON.stringify({center: [c.lat, c.lng], zoom: map.getZoom(), at: Date.now()}));
        } catch (e) { /* no session storage */ }
        location.reload();
      }, wait);
    }
    function setLive(on, text) {
      var el = document.getElementById("gis-live");
      if (el) { el.className = on ? "gis-live-on" : "gis-live-off"; el.textContent = text; }
    }
    function connect() {  // from the last change before the page was made (a reconnect: the browser's own id)
      var es = new EventSource(opts.server + "/events" + (opts.since ? "?since=" + encodeURIComponent(opts.since) : ""));
      es.onopen = function () { setLive(true, "LIVE"); };
      es.onerror = function () {
        setLive(false, "reconnecting…");
        if (es.readyState === EventSource.CLOSED) { setTimeout(connect, 3000); }
      };
      es.addEventListener("change", function (ev) {
        state.events += 1;
        if (concerns(JSON.parse(ev.data))) { reloadSoon(); }
      });
      // a stream from another process than the page's (several workers), where ``since`` means nothing: when a
      // live layer changed since the page was read, it is made again, at most once a minute (which change it
      // was cannot be told, and a busy province changes something every moment)
      es.addEventListener("hello", function (ev) {
        var hello = JSON.parse(ev.data);
        if (hello.resumed || !V.newer(hello.versions, opts.versions, LIVE_TABLES)) { return; }
        var mark = "gis-ioc-view-reread:" + location.pathname, at = 0;
        try { at = Number(sessionStorage.getItem(mark) || 0); } catch (e) { /* no session storage */ }
        if (Date.now() - at < 60000) { return; }
        try { sessionStorage.setItem(mark, String(Date.now())); } catch (e) { /* no session storage */ }
        state.reread = true;
        reloadSoon();
      });
    }
    if (opts.server !== null) { connect(); }  // null: a snapshot (a file, a notebook)
  };
})();
