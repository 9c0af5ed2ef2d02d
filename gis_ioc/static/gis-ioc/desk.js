/* gis-ioc operators' desk: search, log, work the queue, merge duplicates, through the public API.
   The operator's key lives in this tab's sessionStorage only (other sites cannot read it). */
(function () {
  "use strict";
  var D = (window.GisIocDesk = {});
  var KEY = "gis-ioc-desk-key";
  var SEVERITY_RANK = {extreme: 0, severe: 1, moderate: 2, minor: 3, unknown: 4};
  var STEP_LABEL = {verified: "Verify", rejected: "Reject", dispatched: "Dispatch", in_progress: "On scene",
                    resolved: "Resolve", closed: "Close", reopened: "Reopen"};

  function $(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function ago(iso) {
    if (!iso) { return "—"; }
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) { return Math.round(s) + " s"; }
    if (s < 5400) { return Math.round(s / 60) + " min"; }
    if (s < 172800) { return Math.round(s / 3600) + " h"; }
    return Math.round(s / 86400) + " d";
  }
  function debounce(fn, ms) { var t; return function () { var a = arguments; clearTimeout(t); t = setTimeout(function () { fn.apply(null, a); }, ms); }; }

  D.start = function (map, parts, cfg) {
    var state = {key: sessionStorage.getItem(KEY), queue: [], selected: null, etag: null, results: [], hit: -1,
                 place: null, events: 0, saving: false};
    D.state = state;
    var marker = null;

    function api(path, opts) {
      opts = opts || {};
      var headers = Object.assign({Accept: "application/json"}, opts.headers || {});
      if (state.key) { headers.Authorization = "Bearer " + state.key; }
      if (opts.json !== undefined) { headers["Content-Type"] = "application/geo+json"; opts.body = JSON.stringify(opts.json); }
      return fetch(cfg.server + path, {method: opts.method || "GET", headers: headers, body: opts.body})
        .then(function (r) {
          return r.text().then(function (t) {
            var body = null;
            try { body = t ? JSON.parse(t) : null; } catch (e) { body = {description: t}; }
            return {ok: r.ok, status: r.status, body: body, etag: r.headers.get("ETag")};
          });
        });
    }
    function say(text, bad) { var el = $("desk-message"); el.textContent = text; el.className = "desk-message" + (bad ? " desk-bad" : ""); }

    // -- sign in: the key is checked once, then kept for this tab
    function signedIn() {
      $("desk-signin").hidden = true; $("desk-main").hidden = false;
      loadQueue(); connect();
    }
    $("desk-signin").addEventListener("submit", function (e) {
      e.preventDefault();
      state.key = $("desk-key").value.trim();
      api("/collections/incidents/items?limit=1").then(function (r) {
        if (r.status === 401) { $("desk-signin-error").textContent = "This key is unknown or revoked."; state.key = null; return; }
        sessionStorage.setItem(KEY, state.key); signedIn();
      });
    });
    if (state.key) { signedIn(); } else { $("desk-signin").hidden = false; $("desk-key").focus(); }

    // -- search
    function pointOf(geometry) {
      var layer = L.geoJSON(geometry);
      var c = layer.getBounds().getCenter();
      return [c.lng, c.lat];
    }
    var search = debounce(function () {
      var q = $("desk-q").value.trim();
      if (!q) { state.results = []; drawResults(); return; }
      var c = map.getCenter();
      api("/search?limit=8&q=" + encodeURIComponent(q) + "&near=" + c.lng.toFixed(5) + "," + c.lat.toFixed(5))
        .then(function (r) {
          state.results = r.ok ? r.body.results : [];
          state.hit = state.results.length ? 0 : -1;
          drawResults();
        });
    }, 150);
    function drawResults() {
      $("desk-results").innerHTML = state.results.map(function (f, i) {
        var p = f.properties || f;
        var where = p.lies_in || p.today;
        return '<li class="' + (i === state.hit ? "desk-hit" : "") + '" data-i="' + i + '">' + esc(p.name || p.title) +
          ' <span class="desk-muted">' + esc(p.type || p.kind || "") + (p.code ? " · " + esc(p.code) : "") +
          (where ? " · " + esc(where.name) : "") +
          (p.valid_to ? " (former, until " + esc(p.valid_to) + ")" : "") + "</span></li>";
      }).join("");
    }
    function chooseResult(i) {
      var f = state.results[i];
      if (!f) { return; }
      var p = f.properties || f;
      state.results = []; drawResults();
      if (p.kind === "incident" && p.id) { select(Number(p.id)); return; }
      var at = p.at || pointOf(f.geometry);
      map.setView([at[1], at[0]], Math.max(map.getZoom(), 15));
      place(at, p.name || p.title);
    }
    $("desk-q").addEventListener("input", search);
    $("desk-q").addEventListener("keydown", function (e) {
      if (e.key === "ArrowDown") { state.hit = Math.min(state.hit + 1, state.results.length - 1); drawResults(); e.preventDefault(); }
      else if (e.key === "ArrowUp") { state.hit = Math.max(state.hit - 1, 0); drawResults(); e.preventDefault(); }
      else if (e.key === "Enter") { chooseResult(state.hit); e.preventDefault(); }
    });
    $("desk-results").addEventListener("click", function (e) {
      var li = e.target.closest("li"); if (li) { chooseResult(Number(li.dataset.i)); }
    });

    // -- a new incident: placed by a click, a search result or "n" (the map's centre)
    function fill(id, values) { $(id).innerHTML = values.map(function (v) { return "<option>" + esc(v) + "</option>"; }).join(""); }
    fill("f-type", cfg.types); fill("f-severity", cfg.severities); fill("f-source", cfg.sources);
    $("f-severity").value = "moderate"; $("f-source").value = "operator";
    function place(lonlat, label) {
      state.place = lonlat;
      if (marker) { marker.setLatLng([lonlat[1], lonlat[0]]); } else {
        marker = L.marker([lonlat[1], lonlat[0]], {draggable: true, keyboard: false}).addTo(map);
        marker.on("dragend", function () { var ll = marker.getLatLng(); state.place = [ll.lng, ll.lat]; previewDuplicates(); });
      }
      $("desk-where").textContent = (label ? label + " · " : "") + lonlat[1].toFixed(5) + ", " + lonlat[0].toFixed(5);
      $("desk-form").hidden = false;
      clearErrors();
      $("f-type").focus();
      previewDuplicates();
    }
    map.on("click", function (e) { if (!$("desk-main").hidden) { place([e.latlng.lng, e.latlng.lat]); } });
    function closeForm() {
      $("desk-form").hidden = true; state.place = null;
      if (marker) { map.removeLayer(marker); marker = null; }
      $("desk-dupes").innerHTML = "";
    }
    $("f-cancel").addEventListener("click", closeForm);
    function clearErrors() { Array.prototype.forEach.call(document.querySelectorAll("#desk-form .desk-error"), function (el) { el.textContent = ""; }); }
    var previewDuplicates = debounce(function () {
      if (!state.place) { return; }
      api("/collections/incidents/duplicates?lon=" + state.place[0].toFixed(6) + "&lat=" + state.place[1].toFixed(6) +
          "&type=" + encodeURIComponent($("f-type").value)).then(function (r) {
        var found = r.ok ? r.body.possible_duplicates : [];
        $("desk-dupes").innerHTML = found.length ? "<b>Maybe the same event:</b>" + found.map(function (d) {
          return '<div class="desk-dupe">#' + d.id + " " + esc(d.name) + ' <span class="desk-muted">' + d.distance_m +
            " m, " + d.minutes_apart + ' min apart</span> <button type="button" data-merge="' + d.id +
            '">Save as a report of #' + d.id + "</button></div>";
        }).join("") : "";
      });
    }, 200);
    $("f-type").addEventListener("change", previewDuplicates);
    $("desk-dupes").addEventListener("click", function (e) {
      var id = e.target.dataset && e.target.dataset.merge;
      if (id) { save(Number(id)); }
    });
    function save(into) {
      if (state.saving || !state.place) { return; }
      clearErrors();
      var props = {};
      ["type", "severity", "source", "title", "description"].forEach(function (n) {
        var v = $("f-" + n).value.trim(); if (v) { props[n] = v; }
      });
      state.saving = true;
      api("/collections/incidents/items", {method: "POST", json: {type: "Feature", properties: props,
        geometry: {type: "Point", coordinates: state.place}}}).then(function (r) {
        state.saving = false;
        if (!r.ok) {
          var field = String((r.body && r.body.parameter) || "").replace(/^properties\./, "");
          var slot = document.querySelector('#desk-form .desk-error[data-for="' + field + '"]');
          (slot || $("desk-message")).textContent = (r.body && r.body.description) || ("error " + r.status);
          say("Not saved: " + ((r.body && r.body.description) || r.status), true);
          return;
        }
        var id = r.body.id;
        closeForm(); $("f-title").value = ""; $("f-description").value = "";
        say("Logged #" + id + (into ? ", merged into #" + into : ""));
        var then = into ? api("/collections/incidents/items/" + into + "/merge", {method: "POST", json: {duplicate: id}}) : Promise.resolve(null);
        then.then(function (m) {
          if (m && !m.ok) { say("Logged #" + id + " but not merged: " + m.body.description, true); }
          loadQueue(); select(into || id);
        });
      });
    }
    $("desk-form").addEventListener("submit", function (e) { e.preventDefault(); save(null); });

    // -- the active queue: severity first, then age
    function loadQueue() {
      var filter = "status IN (" + cfg.active.map(function (s) { return "'" + s + "'"; }).join(",") + ") AND merged_into IS NULL";
      api("/collections/incidents/items?limit=500&filter=" + encodeURIComponent(filter)).then(function (r) {
        if (!r.ok) { say("Queue: " + ((r.body && r.body.description) || r.status), true); return; }
        state.queue = r.body.features.map(function (f) { return Object.assign({id: f.id}, f.properties); });
        state.queue.sort(function (a, b) {
          return (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]) || (Date.parse(a.reported_at) - Date.parse(b.reported_at));
        });
        drawQueue();
      });
    }
    function drawQueue() {
      $("desk-count").textContent = state.queue.length;
      $("desk-queue").innerHTML = state.queue.map(function (p) {
        return '<li data-id="' + p.id + '" class="' + (state.selected === p.id ? "desk-hit" : "") + '"><span class="desk-sev" style="background:' +
          (cfg.colors[p.severity] || "#999") + '"></span>#' + p.id + " " + esc(p.title) + ' <span class="desk-muted">' + esc(p.status) +
          " · " + ago(p.reported_at) + " ago · step " + ago(p.updated_at) + " ago" + (p.reports ? " · " + p.reports + " reports" : "") + "</span></li>";
      }).join("");
    }
    $("desk-queue").addEventListener("click", function (e) { var li = e.target.closest("li"); if (li) { select(Number(li.dataset.id)); } });

    // -- one incident: steps, merges, history, what is near
    function select(id) {
      state.selected = id; drawQueue();
      api("/collections/incidents/items/" + id).then(function (r) {
        if (!r.ok) { say("#" + id + ": " + ((r.body && r.body.description) || r.status), true); return; }
        state.etag = r.etag;
        var f = r.body, p = f.properties;
        var at = pointOf(f.geometry);
        map.setView([at[1], at[0]], Math.max(map.getZoom(), 15));
        var steps = (cfg.lifecycle[p.status] || []).map(function (s, i) {
          return '<button type="button" data-step="' + s + '">' + (i + 1) + " " + (STEP_LABEL[s] || s) + "</button>";
        }).join(" ");
        // the same incident shown again (a change's event): its history stays on screen until the new one comes
        var kept = $("desk-detail").dataset.id === String(id) && $("desk-history") ? $("desk-history").innerHTML : "";
        $("desk-detail").hidden = false;
        $("desk-detail").dataset.id = String(id);
        $("desk-detail").innerHTML = "<h3>#" + id + " " + esc(p.title) + "</h3><p>" + esc(p.type) + " · " + esc(p.severity) +
          " · <b>" + esc(p.status) + "</b> · reported " + ago(p.reported_at) + " ago · " + esc(p.source) +
          (p.reports ? " · " + p.reports + " reports merged" : "") + (p.merged_into ? ' · report of <a href="#" data-open="' + p.merged_into + '">#' +
          p.merged_into + '</a> <button type="button" data-unmerge="' + p.merged_into + '">Unmerge</button>' : "") + "</p>" +
          '<div class="desk-steps">' + steps + '</div><div id="desk-similar"></div><h4>Near</h4><div id="desk-near">…</div><h4>History</h4><ol id="desk-history" class="desk-history">' + kept + '</ol>';
        similar(id, p, at); near(id); history(id);
      });
    }
    function similar(id, p, at) {
      if (p.merged_into) { return; }
      api("/collections/incidents/duplicates?lon=" + at[0].toFixed(6) + "&lat=" + at[1].toFixed(6) + "&type=" +
          encodeURIComponent(p.type) + "&at=" + encodeURIComponent(p.reported_at)).then(function (r) {
        var found = (r.ok ? r.body.possible_duplicates : []).filter(function (d) { return d.id !== id; });
        $("desk-similar").innerHTML = found.length ? "<h4>Maybe the same event</h4>" + found.map(function (d) {
          return '<div class="desk-dupe">#' + d.id + " " + esc(d.name) + ' <span class="desk-muted">' + d.distance_m + " m, " +
            d.minutes_apart + ' min</span> <button type="button" data-merge-into="' + d.id + '">Merge into #' + d.id +
            '</button> <button type="button" data-merge-here="' + d.id + '">Merge #' + d.id + " here</button></div>";
        }).join("") : "";
      });
    }
    function near(id) {
      Promise.all([api("/analysis/nearest?layer=cameras&k=3&incident=" + id), api("/analysis/nearest?layer=infrastructure&k=3&incident=" + id)])
        .then(function (rs) {
          $("desk-near").innerHTML = rs.map(function (r) {
            return r.ok ? r.body.features.map(function (f) {
              var q = f.properties;
              return "<div>" + esc(q.name || q.code || f.id) + ' <span class="desk-muted">' + esc(q.kind || q.status || "") + " · " +
                Math.round(q.distance_m) + " m</span></div>";
            }).join("") : "";
          }).join("");
        });
    }
    function history(id) {
      api("/collections/incidents/items/" + id + "/history").then(function (r) {
        if (!r.ok) { return; }
        $("desk-history").innerHTML = r.body.steps.map(function (s) {
          var what = Object.keys(s.changes).map(function (k) {
            var c = s.changes[k]; return k + (c && c.to !== undefined ? " → " + esc(c.to) : "");
          }).join(", ");
          return "<li>" + esc(new Date(s.at).toLocaleString()) + " · " + esc(s.operation) + " · " + esc(s.by || "—") + (what ? " · " + what : "") + "</li>";
        }).join("");
      });
    }
    function step(status) {
      var id = state.selected;
      api("/collections/incidents/items/" + id, {method: "PATCH", json: {properties: {status: status}},
        headers: {"If-Match": state.etag}}).then(function (r) {
        if (r.status === 412) {  // someone else changed it: say who, then show what it is now
          api("/collections/incidents/items/" + id + "/history").then(function (h) {
            var last = h.ok && h.body.steps.length ? h.body.steps[h.body.steps.length - 1] : null;
            say("#" + id + " was changed meanwhile" + (last ? " by " + (last.by || "?") + " (" + last.operation + ", " +
              new Date(last.at).toLocaleTimeString() + ")" : "") + "; here it is now.", true);
            select(id);
          });
          return;
        }
        if (!r.ok) { say("#" + id + ": " + ((r.body && r.body.description) || r.status), true); return; }
        say("#" + id + " → " + status); loadQueue(); select(id);
      });
    }
    function merge(main, report) {
      api("/collections/incidents/items/" + main + "/merge", {method: "POST", json: {duplicate: report}}).then(function (r) {
        if (!r.ok) { say("Not merged: " + ((r.body && r.body.description) || r.status), true); return; }
        say("#" + report + " merged into #" + main); loadQueue(); select(main);
      });
    }
    $("desk-detail").addEventListener("click", function (e) {
      var d = e.target.dataset || {};
      if (d.step) { step(d.step); }
      else if (d.mergeInto) { merge(Number(d.mergeInto), state.selected); }
      else if (d.mergeHere) { merge(state.selected, Number(d.mergeHere)); }
      else if (d.unmerge) {
        api("/collections/incidents/items/" + d.unmerge + "/merge/" + state.selected, {method: "DELETE"}).then(function (r) {
          say(r.ok ? "#" + state.selected + " stands alone again" : "Not unmerged: " + r.body.description, !r.ok); loadQueue(); select(state.selected);
        });
      } else if (d.open) { e.preventDefault(); select(Number(d.open)); }
    });

    // -- keyboard first
    document.addEventListener("keydown", function (e) {
      var typing = /INPUT|TEXTAREA|SELECT/.test((e.target && e.target.tagName) || "");
      if (e.key === "Escape") { if (!$("desk-form").hidden) { closeForm(); } $("desk-q").blur(); return; }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("desk-form").hidden) { e.preventDefault(); save(null); return; }
      if (typing || $("desk-main").hidden) { return; }
      if (e.key === "/") { e.preventDefault(); $("desk-q").focus(); $("desk-q").select(); }
      else if (e.key === "n") { e.preventDefault(); var c = map.getCenter(); place([c.lng, c.lat], "map centre"); }
      else if (e.key === "j" || e.key === "k") {
        var i = state.queue.findIndex(function (p) { return p.id === state.selected; });
        i = e.key === "j" ? Math.min(i + 1, state.queue.length - 1) : Math.max(i - 1, 0);
        if (state.queue[i]) { select(state.queue[i].id); }
      } else if (/^[1-4]$/.test(e.key) && state.selected) {
        var b = document.querySelectorAll("#desk-detail [data-step]")[Number(e.key) - 1];
        if (b) { step(b.dataset.step); }
      }
    });

    // -- live: every desk and the wall move together
    function redrawGrid() {  // the wall's tiles, the incidents' with the live window as it is now
      parts.grids.forEach(function (grid) {
        if (grid.options.filter) { grid.options.filter = encodeURIComponent(GisIocViews.timeFilter(cfg.time, cfg.time.hours)); }
        map.removeLayer(grid);
        grid.addTo(map);
      });
    }
    var later = debounce(function () { loadQueue(); redrawGrid(); }, 500);
    function connect() {  // the live stream, as the wall's (GisIocViews.follow)
      GisIocViews.follow(cfg.server, cfg.since, cfg.versions, {
        live: function (on) {
          $("desk-live").className = on ? "gis-live-on" : "gis-live-off";
          $("desk-live").textContent = on ? "LIVE" : "reconnecting…";
        },
        change: function (ev) {
          state.events += 1;
          var c = JSON.parse(ev.data);
          if (c.layer === "incidents" || c.layer === "*") { later(); if (c.id === state.selected) { select(state.selected); } }
        },
        missed: function () { later(); }  // (connect() may run before later is set: at sign-in from the tab)
      });
    }
    setInterval(drawQueue, 30000);  // the ages move on
  };
})();
