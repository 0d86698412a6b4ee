// floodwatch pages: live updates over server-sent events, node charts, command previews, theme toggle.
(function () {
  "use strict";
  var FW = window.FW, body = document.body, csrf = body.getAttribute("data-csrf");
  var COLORS = {pps: "#4f8cff", max: "#a36bff", bps: "#2fbf71", tcp: "#4f8cff", udp: "#f5a524", icmp: "#e5484d"};

  var theme = document.getElementById("theme");
  if (theme) theme.addEventListener("click", function () {
    var t = document.documentElement.getAttribute("data-theme") === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", t);
    try { localStorage.setItem("fw-theme", t); } catch (e) { /* private mode */ }
  });

  function text(tag, value, cls) {
    var e = document.createElement(tag); e.textContent = value === null || value === undefined ? "-" : String(value);
    if (cls) e.className = cls; return e;
  }
  function when(iso) { return iso ? String(iso).replace("T", " ").replace("Z", "").slice(0, 19) : "-"; }

  // -- fleet and node pages: current pps ---------------------------------------------------------
  function spark(cell, values, thr) {
    var w = 120, h = 28, top = Math.max.apply(null, values.concat([thr || 0, 1]));
    var pts = values.map(function (v, i) { return (i * w / Math.max(1, values.length - 1)).toFixed(1) + "," + (h - 2 - v / top * (h - 4)).toFixed(1); }).join(" ");
    var line = cell.querySelector("polyline"); if (line) line.setAttribute("points", pts);
  }
  function onPps(map) {
    Object.keys(map).forEach(function (id) {
      var v = map[id], row = document.querySelector('#fleet tr[data-node-id="' + id + '"]');
      if (row) {
        row.querySelector('[data-f="pps"]').textContent = FW.human(v[1]);
        row.querySelector('[data-f="bps"]').textContent = FW.human(v[2], "b/s");
        var cell = row.querySelector('[data-f="spark"]'), vals = JSON.parse(cell.getAttribute("data-values") || "[]");
        var minute = Math.floor(v[0] / 60);
        if (String(cell.getAttribute("data-minute")) === String(minute) && vals.length) vals[vals.length - 1] = v[1];
        else { vals.push(v[1]); if (vals.length > 15) vals.shift(); }
        cell.setAttribute("data-minute", minute); cell.setAttribute("data-values", JSON.stringify(vals));
        spark(cell, vals, parseFloat(row.getAttribute("data-threshold")) || 0);
      }
      var np = document.getElementById("node-pps");
      if (np && np.getAttribute("data-node-id") === id) {
        np.textContent = FW.human(v[1]); document.getElementById("node-bps").textContent = FW.human(v[2], "b/s");
      }
    });
  }

  // -- incidents: fleet counts, the list, the detail page ----------------------------------------
  function onIncident(inc) {
    var row = document.querySelector('#fleet tr[data-node-id="' + inc.node_id + '"]');
    if (row) {
      var cell = row.querySelector('[data-f="active"]'); cell.textContent = "";
      if (inc.node_active > 0) {
        var a = text("a", inc.node_active + " active", "pill active");
        a.href = "/incidents?node=" + inc.node_id + "&status=active"; cell.appendChild(a);
        row.classList.add("attacked"); row.parentNode.insertBefore(row, row.parentNode.firstChild);
      } else { cell.appendChild(text("span", "0", "muted")); row.classList.remove("attacked"); }
      row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash");
      var n = document.querySelectorAll("#fleet tr.attacked").length, c = document.getElementById("attacked-count");
      if (c) c.textContent = n;
    }
    var table = document.getElementById("incidents");
    if (table) {
      var r = table.querySelector('tr[data-incident-id="' + inc.incident_id + '"]');
      if (r) updateRow(r, inc);
      else if (table.getAttribute("data-first") === "1") table.tBodies[0].insertBefore(newRow(inc), table.tBodies[0].firstChild);
      var empty = table.querySelector("tr.empty"); if (empty) empty.remove();
    }
    var page = document.getElementById("incident");
    if (page && page.getAttribute("data-incident-id") === String(inc.incident_id)) updateRow(document, inc);
  }
  function updateRow(r, inc) {
    var s = r.querySelector('[data-f="status"]'); if (s) { s.textContent = inc.status; s.className = "pill " + inc.status; }
    var p = r.querySelector('[data-f="peak_pps"]'); if (p) p.textContent = FW.human(inc.peak_pps);
  }
  function newRow(inc) {
    var tr = document.createElement("tr"); tr.setAttribute("data-incident-id", inc.incident_id); tr.className = "flash";
    var id = document.createElement("td"), a = text("a", inc.incident_id); a.href = "/incidents/" + inc.incident_id; id.appendChild(a); tr.appendChild(id);
    tr.appendChild(text("td", inc.node_name));
    var st = document.createElement("td"); st.appendChild(text("span", inc.status, "pill " + inc.status)); st.firstChild.setAttribute("data-f", "status"); tr.appendChild(st);
    var fam = text("td", inc.attack_family); if (inc.attack_subtype) fam.appendChild(text("span", " / " + inc.attack_subtype, "muted")); tr.appendChild(fam);
    var sev = document.createElement("td"); sev.className = "hide-s"; sev.appendChild(text("span", inc.severity, "sev " + inc.severity)); tr.appendChild(sev);
    var pk = text("td", FW.human(inc.peak_pps), "num"); pk.setAttribute("data-f", "peak_pps"); tr.appendChild(pk);
    tr.appendChild(text("td", FW.human(inc.peak_bps, "b/s"), "num hide-s"));
    tr.appendChild(text("td", when(inc.started_at), "muted"));
    return tr;
  }

  function connect() {
    if (!body.getAttribute("data-live") || !window.EventSource) return;
    var dot = document.getElementById("live"), es = new EventSource("/events");
    es.onopen = function () { if (dot) dot.classList.add("on"); };
    es.onerror = function () { if (dot) dot.classList.remove("on"); };
    es.addEventListener("pps", function (e) { onPps(JSON.parse(e.data)); });
    es.addEventListener("incident", function (e) { onIncident(JSON.parse(e.data)); });
  }

  // -- node page: charts over a chosen range ----------------------------------------------------
  function nodeCharts() {
    var box = document.getElementById("node-charts"); if (!box) return;
    var range = "1h", node = box.getAttribute("data-node"), thr = parseFloat(box.getAttribute("data-threshold"));
    var bthr = parseFloat(box.getAttribute("data-bps-threshold")), base = JSON.parse(box.getAttribute("data-baseline") || "{}");
    function draw(d) {
      var pts = d.points, bands = d.incidents.map(function (i) { return [i.start, i.end]; });
      var x = {xmin: d.since, xmax: d.until, bands: bands};
      var lines = [];
      if (thr) lines.push({v: thr, label: "threshold", cls: "thr"});
      if (base.mean_pps) lines.push({v: base.mean_pps, label: "baseline", cls: "base"});
      if (base.p99_pps) lines.push({v: base.p99_pps, label: "p99", cls: "base"});
      var pps = [{name: "pps (avg)", color: COLORS.pps, fill: true, points: pts.map(function (p) { return [p[0], p[1]]; })}];
      if (d.step > 1) pps.push({name: "pps (max)", color: COLORS.max, width: 1, points: pts.map(function (p) { return [p[0], p[2]]; })});
      FW.lineChart(document.getElementById("chart-pps"), Object.assign({series: pps, lines: lines, unit: "pps"}, x));
      FW.lineChart(document.getElementById("chart-bps"), Object.assign({series: [{name: "bps (avg)", color: COLORS.bps, fill: true,
        points: pts.map(function (p) { return [p[0], p[3]]; })}], lines: bthr ? [{v: bthr, label: "threshold", cls: "thr"}] : [], unit: "b/s"}, x));
      FW.lineChart(document.getElementById("chart-mix"), Object.assign({ymax: 100, unit: "%", series: [
        {name: "tcp", color: COLORS.tcp, points: pts.map(function (p) { return [p[0], p[5]]; })},
        {name: "udp", color: COLORS.udp, points: pts.map(function (p) { return [p[0], p[6]]; })},
        {name: "icmp", color: COLORS.icmp, points: pts.map(function (p) { return [p[0], p[7]]; })}]}, x));
      box.setAttribute("data-drawn", range);
    }
    function load() {
      fetch("/dash/api/nodes/" + encodeURIComponent(node) + "/series?range=" + range, {credentials: "same-origin"})
        .then(function (r) { return r.json(); }).then(draw);
    }
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.addEventListener("click", function () {
        document.querySelectorAll("#ranges button").forEach(function (o) { o.classList.remove("on"); });
        b.classList.add("on"); range = b.getAttribute("data-range"); load();
      });
    });
    load();
    setInterval(function () { if (range === "15m" || range === "1h") load(); }, 5000);
  }

  // -- incident page: rate curve and duration ---------------------------------------------------
  function incidentChart() {
    var box = document.getElementById("chart-incident"); if (!box) return;
    var curve = JSON.parse(box.getAttribute("data-curve") || "[]").map(function (c) { return [Date.parse(c[0]) / 1000, c[1], c[2]]; });
    FW.lineChart(box, {unit: "pps", series: [{name: "peak pps", color: COLORS.pps, fill: true, points: curve.map(function (c) { return [c[0], c[1]]; })}]});
    box.setAttribute("data-drawn", "1");
    var d = document.getElementById("duration");
    if (d && d.getAttribute("data-start")) {
      var s = Date.parse(d.getAttribute("data-start")), e = d.getAttribute("data-end") ? Date.parse(d.getAttribute("data-end")) : Date.now();
      var sec = Math.max(0, Math.round((e - s) / 1000));
      d.textContent = (sec >= 3600 ? Math.floor(sec / 3600) + " h " : "") + Math.floor(sec % 3600 / 60) + " min " + sec % 60 + " s" + (d.getAttribute("data-end") ? "" : " (ongoing)");
    }
  }

  // -- queue form: the node's validator's verdict before queuing ---------------------------------
  function previews() {
    var btn = document.getElementById("preview-btn"); if (!btn) return;
    var form = document.getElementById("queue-form"), out = document.getElementById("preview");
    btn.addEventListener("click", function () {
      var data = {}; new FormData(form).forEach(function (v, k) { data[k] = v; });
      fetch("/dash/api/commands/preview", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(data)})
        .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (a) {
          out.textContent = "";
          if (a[0] !== 200) { out.appendChild(text("p", a[1].error || ("error " + a[0]), "bad")); return; }
          var ul = document.createElement("ul");
          a[1].results.forEach(function (r) {
            var li = text("li", (r.ok ? "✓ runs: " + r.argv.join(" ") : "✗ rejected: " + r.error), r.ok ? "ok" : "bad");
            li.setAttribute("data-ok", r.ok ? "1" : "0"); ul.appendChild(li);
          });
          out.appendChild(ul);
        });
    });
  }

  connect(); nodeCharts(); incidentChart(); previews();
})();
