// vmroc dashboard plots: small multiples of time series as hand-written SVG, with
// fault windows shaded and vertical marks (onsets, anomalies). No library.
"use strict";
const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return a >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(2);
}

function clock(t) { return new Date(t * 1000).toTimeString().slice(0, 8); }

// spec: {start, end, panels: [{label, points: [[t, v], ...]}],
//        windows: [{start, end, kind}], marks: [{t, cls, label}]}
function drawPanels(box, spec) {
  box.textContent = "";
  const width = Math.max(box.clientWidth - 10, 400), h = 64, left = 190, right = 50;
  const x = (t) => left + (t - spec.start) / Math.max(spec.end - spec.start, 1e-9) * (width - left - right);
  if (!spec.panels.length) { box.textContent = "No stored history for this span yet."; return; }
  const svg = el("svg", {width: width, height: spec.panels.length * (h + 6) + 18,
                         role: "img", "aria-label": "features over time"}, box);
  spec.panels.forEach((p, i) => {
    const top = i * (h + 6);
    const g = el("g", {transform: `translate(0,${top})`}, svg);
    for (const w of spec.windows || []) {
      const a = x(Math.max(w.start, spec.start)), b = x(Math.min(w.end ?? spec.end, spec.end));
      el("rect", {class: "fault", x: a, y: 0, width: Math.max(b - a, 1), height: h}, g)
        .appendChild(el("title", {})).textContent = w.kind;
    }
    el("line", {class: "axis", x1: left, x2: width - right, y1: h, y2: h}, g);
    // the range of 99% of the points: one wild value (a counter read mid-update, a
    // reboot) must not flatten the rest; what lies beyond is drawn at the edge
    const vals = p.points.map((q) => q[1]).sort((a, b) => a - b);
    const at = (f) => vals.length ? vals[Math.floor(f * (vals.length - 1))] : 0;
    const lo = Math.min(at(0.005), 0);
    let hi = at(0.995);
    if (hi <= lo) hi = Math.max(vals.length ? vals[vals.length - 1] : 0, lo + 1e-9);
    if (hi <= lo) hi = lo + 1;
    const y = (v) => h - 4 - (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo) * (h - 10);
    if (p.points.length) {
      const d = p.points.map((q, k) => `${k ? "L" : "M"}${x(q[0]).toFixed(1)},${y(q[1]).toFixed(1)}`).join("");
      el("path", {class: "line", d: d}, g);
    }
    for (const m of spec.marks || []) {
      if (m.guest && p.guest && m.guest !== p.guest) continue;
      el("line", {class: m.cls, x1: x(m.t), x2: x(m.t), y1: 0, y2: h}, g)
        .appendChild(el("title", {})).textContent = m.label || "";
    }
    el("text", {x: 4, y: 16}, g).textContent = p.label;
    el("text", {x: width - right + 4, y: 12}, g).textContent = fmt(hi);
    el("text", {x: width - right + 4, y: h - 2}, g).textContent = fmt(lo);
  });
  const axis = el("g", {transform: `translate(0,${spec.panels.length * (h + 6) + 12})`}, svg);
  el("text", {x: left, y: 0}, axis).textContent = clock(spec.start);
  el("text", {x: width - right - 50, y: 0}, axis).textContent = clock(spec.end);
}

function incidentPlot() {
  const box = document.getElementById("plot"), data = document.getElementById("plot-data");
  if (!box || !data) return;
  const plot = JSON.parse(data.textContent);
  drawPanels(box, {
    start: plot.start, end: plot.end, windows: plot.windows,
    panels: plot.series.map((s) => ({label: `${s.guest} ${s.feature}`, points: s.points})),
    marks: [{t: plot.onset, cls: "onset", label: "first onset"},
            {t: plot.confirmed, cls: "onset", label: "confirmed"}],
  });
}

function guestTimeline() {
  const box = document.getElementById("timeline");
  if (!box) return;
  const refresh = () => fetch(box.dataset.url, {headers: {Accept: "application/json"}})
    .then((r) => r.json())
    .then((t) => {
      drawPanels(box, {
        start: t.start, end: t.end, windows: t.windows,
        panels: t.features.map((name, i) => ({label: name, points: t.points.map((p) => [p[0], p[1][i]])})),
        marks: t.anomalies.map((a) => ({t: a.onset ?? a.ts, cls: "anomaly",
                                       label: `${a.detector}: ${a.features.join(", ")}`})),
      });
      const up = document.getElementById("updated");
      if (up) up.textContent = `(last sample ${clock(t.end)}, ${t.samples} samples)`;
    })
    .catch(() => {});
  refresh();
  setInterval(refresh, 2000);
}

// the first page of the incident list reloads when a newer incident is stored
function incidentList() {
  const table = document.getElementById("incidents");
  if (!table || table.dataset.url === undefined) return;
  setInterval(() => fetch(table.dataset.url).then((r) => r.json()).then((d) => {
    const newest = d.incidents.length ? d.incidents[0].id : "";
    if (newest !== table.dataset.newest) location.reload();
  }).catch(() => {}), 5000);
}

document.addEventListener("DOMContentLoaded", () => { incidentPlot(); guestTimeline(); incidentList(); });
