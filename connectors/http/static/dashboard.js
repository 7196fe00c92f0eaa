// Arbiter dashboard: polls /dashboard/data every 2 s and renders it. Every text goes
// in through textContent; the charts are SVG strings from Arbiter's own renderer
// (app/trainer/plots.py, which escapes every text) and the dead-letter payload arrives
// HTML-escaped by the server. Errors never escape to the console: a failed poll shows
// the "reconnecting" badge and the next poll tries again.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var KEY_STORE = "arbiter.dashboard.key";
  var timer = null;
  var canReadPayloads = false;

  function $(id) { return document.getElementById(id); }

  function storedKey() {
    try { return window.sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }

  function setKey(key) {
    try {
      if (key) { window.sessionStorage.setItem(KEY_STORE, key); }
      else { window.sessionStorage.removeItem(KEY_STORE); }
    } catch (e) { /* storage off: the key lives until the page closes */ }
    memoryKey = key;
  }

  var memoryKey = storedKey();

  function headers() {
    var h = { "Accept": "application/json" };
    if (memoryKey) { h["Authorization"] = "Bearer " + memoryKey; }
    return h;
  }

  function badge(show) { var b = $("badge"); if (b) { b.hidden = !show; } }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") { return "–"; }
    if (typeof value === "number") { return value.toFixed(digits === undefined ? 2 : digits); }
    return String(value);
  }

  function fillTable(id, rows, makeRow, emptyText) {
    var table = $(id);
    if (!table) { return; }
    var body = table.tBodies[0];
    body.textContent = "";
    if (!rows || !rows.length) {
      var tr = el("tr");
      var td = el("td", emptyText || "none", "muted");
      td.colSpan = table.tHead.rows[0].cells.length;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (row) {
      var tr = el("tr");
      makeRow(row).forEach(function (cell) {
        tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
      });
      body.appendChild(tr);
    });
  }

  function wrap(node) {
    if (node.tagName === "TD") { return node; }
    var td = el("td");
    td.appendChild(node);
    return td;
  }

  function num(value, digits) { return el("td", fmt(value, digits), "num"); }

  function showLogin(message) {
    var form = $("login");
    if (form) { form.hidden = false; }
    var err = $("login-error");
    if (err) { err.textContent = message || ""; }
  }

  function openViewer(title, url, escaped) {
    var dialog = $("viewer");
    $("viewer-title").textContent = title;
    var body = $("viewer-body");
    body.textContent = "loading…";
    if (dialog && typeof dialog.showModal === "function" && !dialog.open) { dialog.showModal(); }
    fetch(url, { headers: headers(), cache: "no-store" }).then(function (resp) {
      return resp.text().then(function (text) {
        if (!resp.ok) { body.textContent = "HTTP " + resp.status + ": " + text.slice(0, 500); return; }
        var note = resp.headers.get("X-Payload-Truncated") === "true"
          ? "\n\n[cut at 64 KiB of " + resp.headers.get("X-Payload-Bytes") + " bytes]" : "";
        // The payload endpoint escapes the bytes server-side; everything else is text.
        if (escaped) { body.innerHTML = text; body.appendChild(document.createTextNode(note)); }
        else { body.textContent = text; }
      });
    }).catch(function () { body.textContent = "could not load (connection lost)"; });
  }

  function renderRates(d) {
    var totals = d.totals || {}, dec = totals.decisions || {}, dead = totals.dead_letters || {};
    fillTable("rates", d.types || [], function (t) {
      var r = (d.rates || {})[t] || {};
      return [el("td", t), num(r.events_per_s || 0), num(r.decisions_per_s || 0),
        num(dec[t] || 0, 0), num(dead[t] || 0, 0)];
    });
  }

  function renderCharts(d) {
    var charts = d.charts || {};
    [["chart-rate", charts.rate], ["chart-latency", charts.latency]].forEach(function (pair) {
      var box = $(pair[0]);
      // Our own server-rendered SVG (plots.py escapes all text); not user input.
      if (box && typeof pair[1] === "string") { box.innerHTML = pair[1]; }
    });
  }

  function renderMix(d) {
    var box = $("mix");
    if (!box) { return; }
    box.textContent = "";
    var mix = d.mix || {};
    var types = Object.keys(mix);
    if (!types.length) { box.appendChild(el("p", "no decisions yet", "muted")); return; }
    types.forEach(function (t) {
      var counts = mix[t], total = 0;
      Object.keys(counts).forEach(function (k) { total += counts[k]; });
      var div = el("div", null, "mix-type");
      div.appendChild(el("strong", t));
      var table = el("table");
      Object.keys(counts).forEach(function (decision) {
        var tr = el("tr"), share = total ? counts[decision] / total : 0;
        var bar = el("span", null, "bar");
        bar.style.width = Math.round(share * 120) + "px";
        var cell = el("td");
        cell.appendChild(bar);
        cell.appendChild(document.createTextNode((share * 100).toFixed(1) + "%"));
        tr.appendChild(el("td", decision));
        tr.appendChild(num(counts[decision], 0));
        tr.appendChild(cell);
        table.appendChild(tr);
      });
      div.appendChild(table);
      box.appendChild(div);
    });
  }

  function linkButton(text, onClick) {
    var b = el("button", text, "link");
    b.type = "button";
    b.addEventListener("click", function () { try { onClick(); } catch (e) { badge(true); } });
    return b;
  }

  function renderRules(d) {
    fillTable("rules", d.top_rules, function (r) {
      return [el("td", r.event_type), linkButton(r.rule, function () {
        openViewer(r.event_type + " / " + r.rule, r.link, false);
      }), num(r.hits, 0)];
    }, "no rule fired recently");
  }

  function renderModels(d) {
    fillTable("models", d.models, function (m) {
      var metrics = Object.keys(m.metrics || {}).map(function (k) {
        return k + " " + fmt(m.metrics[k], 3);
      }).join(", ");
      var drift = m.drift || {};
      var driftText = drift.drifting ? "drifting: " + (drift.reasons || []).join("; ")
        : "ok" + (drift.note ? " (" + drift.note + ")" : "");
      if (drift.worst_psi !== null && drift.worst_psi !== undefined) {
        driftText += " · worst PSI " + fmt(drift.worst_psi, 3);
      }
      return [el("td", m.name), el("td", m.champion === null ? "–" : "v" + m.champion),
        el("td", (m.shadows || []).map(function (v) { return "v" + v; }).join(", ") || "–"),
        el("td", metrics || "–"), el("td", driftText, drift.drifting ? "drifting" : "ok")];
    }, "no model registered");
  }

  function renderDead(d) {
    fillTable("dead", d.dead_letters, function (x) {
      var id = canReadPayloads ? linkButton(String(x.id), function () {
        openViewer("dead letter " + x.id + " (" + x.reason + ")",
          "/dashboard/dead-letters/" + encodeURIComponent(x.id), true);
      }) : el("td", x.id);
      return [id, el("td", x.event_type), el("td", x.reason), el("td", x.detail),
        el("td", x.created_at), num(x.size, 0)];
    }, "no dead letters");
  }

  function renderRuns(d) {
    fillTable("runs", d.training_runs, function (r) {
      var report = el("td", "–");
      if (typeof r.report === "string" && r.report.indexOf("/reports/") === 0) {
        var a = el("a", "report");
        // As given: with auth on the server signs it (?sig=…) for our key, because the
        // new tab cannot send the Authorization header. Links expire; each poll renews.
        a.href = r.report;
        a.target = "_blank";
        a.rel = "noopener";
        report = wrap(a);
      }
      var versions = "v" + fmt(r.champion_version, 0) + " → v" + fmt(r.challenger_version, 0);
      return [el("td", r.id), el("td", r.model), el("td", r.trigger), el("td", r.status),
        el("td", versions), el("td", r.reason), report];
    }, "no training runs yet");
  }

  function renderFailed(d) {
    fillTable("failed", d.failed_deliveries, function (x) {
      return [el("td", x.id), el("td", x.event_id), el("td", x.endpoint), num(x.attempts, 0),
        el("td", fmt(x.last_status)), el("td", x.last_error)];
    }, "no failed deliveries");
  }

  function render(d) {
    canReadPayloads = !!d.can_read_payloads;
    var parts = [renderRates, renderCharts, renderMix, renderRules, renderModels, renderDead,
      renderRuns, renderFailed];
    parts.forEach(function (part) {
      try { part(d); } catch (e) { badge(true); }
    });
    var updated = $("updated");
    if (updated) { updated.textContent = "updated " + new Date().toLocaleTimeString(); }
  }

  function schedule() {
    if (timer !== null) { window.clearTimeout(timer); }
    timer = window.setTimeout(poll, POLL_MS);
  }

  function poll() {
    timer = null;
    fetch("/dashboard/data", { headers: headers(), cache: "no-store" }).then(function (resp) {
      if (resp.status === 401 || resp.status === 403) {
        badge(false);
        showLogin(resp.status === 403 ? "this key lacks the dashboard:read scope"
          : (memoryKey ? "the key was refused" : ""));
        return null; // wait for a key: no polling until one is given
      }
      if (!resp.ok) { throw new Error("HTTP " + resp.status); }
      return resp.json().then(function (d) {
        badge(false);
        var form = $("login");
        if (form) { form.hidden = true; }
        render(d);
        schedule();
      });
    }).catch(function () {
      badge(true);
      schedule();
    });
  }

  function start() {
    var form = $("login");
    if (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var input = $("key");
        setKey(input ? input.value.trim() : "");
        if (input) { input.value = ""; }
        poll();
      });
    }
    var close = $("viewer-close");
    if (close) {
      close.addEventListener("click", function () {
        var dialog = $("viewer");
        if (dialog && dialog.open) { dialog.close(); }
      });
    }
    poll();
  }

  window.addEventListener("unhandledrejection", function (ev) { ev.preventDefault(); badge(true); });
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
}());
