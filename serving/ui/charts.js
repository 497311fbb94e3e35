// A small SVG chart helper (no dependencies): line charts and bar charts.
// Every chart sets data-points on its <svg> to the number of values it drew, so
// tests (and people) can tell an empty chart from a drawn one.
(function () {
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#e8871e", "#1a7f37", "#8e44ad", "#c62828", "#00838f"];

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function frame(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const box = svg.getBoundingClientRect();
  const width = Math.max(box.width, 200), height = Math.max(box.height, 120);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return { width, height, left: 52, right: 10, top: 18, bottom: 22 };
}

function niceNumber(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function emptyMessage(svg, f, message) {
  svg.appendChild(svgEl("text", { x: f.width / 2, y: f.height / 2, "text-anchor": "middle", class: "empty" }, message));
  svg.setAttribute("data-points", "0");
}

// series: [{name, color?, points: [[x, y], ...], marks?: [bool, ...]}]; y may be null (gap).
// options: {xFormat(x) -> string, empty: "message"}
function lineChart(svg, series, options) {
  const opts = options || {};
  const f = frame(svg);
  const all = [];
  for (const s of series) for (const [x, y] of s.points) if (y !== null && Number.isFinite(y)) all.push([x, y]);
  if (all.length === 0) { emptyMessage(svg, f, opts.empty || "no data yet"); return 0; }
  let xmin = Math.min(...all.map(p => p[0])), xmax = Math.max(...all.map(p => p[0]));
  let ymin = Math.min(0, ...all.map(p => p[1])), ymax = Math.max(...all.map(p => p[1]));
  if (xmax === xmin) { xmin -= 1; xmax += 1; }
  if (ymax === ymin) ymax = ymin + 1;
  const px = x => f.left + (x - xmin) / (xmax - xmin) * (f.width - f.left - f.right);
  const py = y => f.height - f.bottom - (y - ymin) / (ymax - ymin) * (f.height - f.top - f.bottom);
  svg.appendChild(svgEl("line", { x1: f.left, y1: f.height - f.bottom, x2: f.width - f.right, y2: f.height - f.bottom, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: f.left, y1: f.top, x2: f.left, y2: f.height - f.bottom, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const y = ymin + (ymax - ymin) * i / 4;
    svg.appendChild(svgEl("text", { x: f.left - 4, y: py(y) + 3, "text-anchor": "end", class: "tick" }, niceNumber(y)));
  }
  const fmt = opts.xFormat || (x => String(x));
  svg.appendChild(svgEl("text", { x: f.left, y: f.height - 6, class: "tick" }, fmt(xmin)));
  svg.appendChild(svgEl("text", { x: f.width - f.right, y: f.height - 6, "text-anchor": "end", class: "tick" }, fmt(xmax)));
  let drawn = 0;
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    let d = "", pen = false;
    s.points.forEach(([x, y]) => {
      if (y === null || !Number.isFinite(y)) { pen = false; return; }
      d += (pen ? "L" : "M") + px(x).toFixed(1) + " " + py(y).toFixed(1) + " ";
      pen = true;
      drawn += 1;
    });
    if (d) svg.appendChild(svgEl("path", { d: d.trim(), fill: "none", stroke: color, "stroke-width": 1.8, "data-series": s.name }));
    s.points.forEach(([x, y], j) => {
      if (y === null || !Number.isFinite(y)) return;
      const alert = s.marks && s.marks[j];
      if (alert || s.points.length <= 40) {
        svg.appendChild(svgEl("circle", { cx: px(x), cy: py(y), r: alert ? 4 : 2, fill: alert ? "#c62828" : color, class: alert ? "alert" : "dot" }));
      }
    });
    svg.appendChild(svgEl("text", { x: f.left + 8 + i * 90, y: 12, fill: color, class: "legend" }, s.name));
  });
  svg.setAttribute("data-points", String(drawn));
  return drawn;
}

// bars: [{label, value}]
function barChart(svg, bars, options) {
  const opts = options || {};
  const f = frame(svg);
  const shown = bars.filter(b => Number.isFinite(b.value));
  if (shown.length === 0) { emptyMessage(svg, f, opts.empty || "none"); return 0; }
  const ymax = Math.max(1, ...shown.map(b => b.value));
  const slot = (f.width - f.left - f.right) / shown.length;
  svg.appendChild(svgEl("line", { x1: f.left, y1: f.height - f.bottom, x2: f.width - f.right, y2: f.height - f.bottom, class: "axis" }));
  shown.forEach((b, i) => {
    const h = b.value / ymax * (f.height - f.top - f.bottom);
    const x = f.left + i * slot + slot * 0.15;
    svg.appendChild(svgEl("rect", { x, y: f.height - f.bottom - h, width: slot * 0.7, height: h, fill: PALETTE[i % PALETTE.length], "data-label": b.label }));
    svg.appendChild(svgEl("text", { x: x + slot * 0.35, y: f.height - f.bottom - h - 3, "text-anchor": "middle", class: "tick" }, niceNumber(b.value)));
    svg.appendChild(svgEl("text", { x: x + slot * 0.35, y: f.height - 6, "text-anchor": "middle", class: "tick" }, b.label));
  });
  svg.setAttribute("data-points", String(shown.length));
  return shown.length;
}

window.StreamfeatCharts = { lineChart, barChart, niceNumber };
})();
