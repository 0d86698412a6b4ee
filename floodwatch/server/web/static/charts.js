// floodwatch charts: time series drawn as SVG, with axes, threshold/baseline lines, shaded incidents
// and a hover tooltip. No dependencies. window.FW.lineChart(element, options).
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var FW = window.FW = window.FW || {};

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  FW.human = function (v, unit) {
    if (v === null || v === undefined || isNaN(v)) return "-";
    var a = Math.abs(v), s = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
    for (var i = 0; i < s.length; i++) if (a >= s[i][1]) return (v / s[i][1]).toPrecision(3) + " " + s[i][0] + (unit || "");
    return (Math.round(v * 10) / 10) + (unit ? " " + unit : "");
  };

  function niceStep(span, n) {
    var raw = span / Math.max(1, n), p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function timeLabel(t, span) {
    var d = new Date(t * 1000), pad = function (x) { return (x < 10 ? "0" : "") + x; };
    if (span > 2 * 86400) return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + (span < 8 * 86400 ? " " + pad(d.getUTCHours()) + "h" : "");
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + (span <= 900 ? ":" + pad(d.getUTCSeconds()) : "");
  }

  function nearest(points, t) {
    var lo = 0, hi = points.length - 1;
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (points[mid][0] < t) lo = mid; else hi = mid; }
    return Math.abs(points[lo][0] - t) <= Math.abs(points[hi][0] - t) ? lo : hi;
  }

  // opts: {series: [{name, color, points: [[t, v], ...]}], xmin, xmax, unit, ymax,
  //        lines: [{v, label, cls}], bands: [[t0, t1, label]]}
  var drawn = [];
  var timer = null;
  window.addEventListener("resize", function () {  // redraw at the new width (phones rotate)
    clearTimeout(timer);
    timer = setTimeout(function () {
      drawn.forEach(function (d) { if (d[0].isConnected) FW.lineChart(d[0], d[1]); });
      document.documentElement.setAttribute("data-fw-redrawn", String(window.innerWidth));  // tests wait on it
    }, 100);
  });

  FW.lineChart = function (box, opts) {
    box.textContent = "";
    if (!box._fwDrawn) { box._fwDrawn = true; drawn.push([box, opts]); }
    else drawn.forEach(function (d) { if (d[0] === box) d[1] = opts; });
    var W = Math.max(260, box.clientWidth), H = Math.max(120, box.clientHeight - 22);
    var m = {l: 58, r: 12, t: 10, b: 24};
    var all = [];
    opts.series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null) all.push(p); }); });
    var xmin = opts.xmin, xmax = opts.xmax;
    if (xmin === undefined) xmin = all.length ? Math.min.apply(null, all.map(function (p) { return p[0]; })) : 0;
    if (xmax === undefined) xmax = all.length ? Math.max.apply(null, all.map(function (p) { return p[0]; })) : 1;
    if (xmax <= xmin) xmax = xmin + 1;
    var ymax = opts.ymax || 0;
    all.forEach(function (p) { if (p[1] > ymax) ymax = p[1]; });
    (opts.lines || []).forEach(function (l) { if (l.v > ymax) ymax = l.v; });
    if (ymax <= 0) ymax = 1;
    var ystep = niceStep(ymax, 4); ymax = Math.ceil(ymax / ystep) * ystep;
    var X = function (t) { return m.l + (t - xmin) / (xmax - xmin) * (W - m.l - m.r); };
    var Y = function (v) { return H - m.b - v / ymax * (H - m.t - m.b); };
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, role: "img"}, box);
    mergeBands(opts.bands || []).forEach(function (b) {
      var x0 = X(Math.max(b[0], xmin)), x1 = X(Math.min(b[1], xmax));
      if (x1 > x0 - 1) el("rect", {x: x0, y: m.t, width: Math.max(2, x1 - x0), height: H - m.t - m.b, "class": "shade"}, svg);
    });
    for (var v = 0; v <= ymax + 1e-9; v += ystep) {
      el("line", {x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), "class": "gridline"}, svg);
      el("text", {x: m.l - 6, y: Y(v) + 4, "text-anchor": "end", "class": "axis"}, svg).textContent = FW.human(v);
    }
    var span = xmax - xmin, nx = Math.max(2, Math.floor((W - m.l) / 90));
    var seen = {};
    for (var i = 0; i <= nx; i++) {
      var t = xmin + span * i / nx, label = timeLabel(t, span);
      if (seen[label]) continue;
      seen[label] = 1;
      el("text", {x: X(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === nx ? "end" : "middle", "class": "axis"}, svg).textContent = label;
    }
    (opts.lines || []).forEach(function (l) {
      el("line", {x1: m.l, x2: W - m.r, y1: Y(l.v), y2: Y(l.v), "class": l.cls}, svg);
      el("text", {x: W - m.r - 4, y: Y(l.v) - 4, "text-anchor": "end", "class": "axis"}, svg).textContent = l.label + " " + FW.human(l.v);
    });
    opts.series.forEach(function (s) {
      var d = "", pen = false;
      s.points.forEach(function (p) {
        if (p[1] === null || p[1] === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1); pen = true;
      });
      if (s.fill && s.points.length) {
        el("path", {d: d + "L" + X(s.points[s.points.length - 1][0]) + "," + Y(0) + "L" + X(s.points[0][0]) + "," + Y(0) + "Z",
          fill: s.color, "fill-opacity": "0.12", stroke: "none"}, svg);
      }
      el("path", {d: d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.6, "stroke-linejoin": "round"}, svg);
    });
    if (!all.length) el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", "class": "axis"}, svg).textContent = "no data in this range";
    legend(box, opts);
    tooltip(box, svg, opts, X, xmin, xmax, W, m);
  };

  function mergeBands(bands) {  // overlapping incidents shade once, not darker and darker
    var out = [];
    bands.slice().sort(function (a, b) { return a[0] - b[0]; }).forEach(function (b) {
      var last = out[out.length - 1];
      if (last && b[0] <= last[1]) last[1] = Math.max(last[1], b[1]); else out.push([b[0], b[1]]);
    });
    return out;
  }

  function legend(box, opts) {
    var lg = document.createElement("div"); lg.className = "legend";
    opts.series.forEach(function (s) {
      var span = document.createElement("span"), i = document.createElement("i");
      i.style.background = s.color; span.appendChild(i); span.appendChild(document.createTextNode(s.name)); lg.appendChild(span);
    });
    box.appendChild(lg);
  }

  function tooltip(box, svg, opts, X, xmin, xmax, W, m) {
    var main = opts.series[0];
    if (!main || !main.points.length) return;
    var cursor = el("line", {y1: m.t, y2: svg.viewBox.baseVal.height - m.b, "class": "cursor", visibility: "hidden"}, svg);
    var tip = document.createElement("div"); tip.className = "tip"; tip.hidden = true; box.appendChild(tip);
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect(), x = (ev.clientX - r.left) * (W / r.width);
      var t = xmin + (x - m.l) / (W - m.l - m.r) * (xmax - xmin);
      var k = nearest(main.points, t), p = main.points[k], px = X(p[0]);
      cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
      tip.textContent = "";
      var head = document.createElement("div"); head.textContent = new Date(p[0] * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
      tip.appendChild(head);
      opts.series.forEach(function (s) {
        var q = s.points[Math.min(k, s.points.length - 1)]; if (!q) return;
        var row = document.createElement("div"), i = document.createElement("i"); i.style.background = s.color;
        row.appendChild(i); row.appendChild(document.createTextNode(s.name + ": " + FW.human(q[1], opts.unit))); tip.appendChild(row);
      });
      tip.hidden = false;
      var left = px / W * r.width + 12; if (left > r.width - 180) left -= 200;
      tip.style.left = left + "px"; tip.style.top = "8px";
    });
    svg.addEventListener("mouseleave", function () { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  }
})();
