// The operations dashboard: fetch /v1/ops/summary every 2 s and draw it.
(function () {
"use strict";

const REFRESH_MS = 2000;
const { lineChart, barChart, niceNumber } = window.StreamfeatCharts;

function clock(ms) { return new Date(ms).toLocaleTimeString(); }
function hour(ms) { const d = new Date(ms); return d.toISOString().slice(5, 13).replace("T", " ") + "h"; }
function age(s) {
  if (s === null || s === undefined) return "unknown";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}
function text(id, value) { document.getElementById(id).textContent = value; }

function renderViews(summary) {
  const body = document.querySelector("#views tbody");
  body.replaceChildren();
  for (const v of summary.views) {
    const tr = document.createElement("tr");
    const state = v.freshness_lag_s === null ? "no data" : (v.stale ? "STALE" : "ok");
    const alerts = (summary.quality[v.name] || { alerts: 0 }).alerts;
    const cells = [v.name, v.newest_event_ms ? new Date(v.newest_event_ms).toISOString() : "-",
      age(v.freshness_lag_s), age(v.expected_freshness_s), state, String(alerts)];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 4) td.className = v.stale ? "stale" : "ok";
      if (i === 5 && alerts > 0) td.className = "stale";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
}

function fillTable(selector, rows) {
  const body = document.querySelector(selector + " tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const [value, className] of row) {
      const td = document.createElement("td");
      td.textContent = value;
      if (className) td.className = className;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// Per host and per shard: owner, lag, last durable point, restore in progress
// (the same rows as `streamfeat status`); hidden unless the shards are durable.
function renderCluster(cluster) {
  const panel = document.getElementById("cluster");
  panel.hidden = !cluster;
  if (!cluster) return;
  const lag = v => (v === null ? "?" : String(v));
  fillTable("#cluster-hosts", cluster.hosts.map(h => [
    [h.owner], [h.shards.join(",")],
    [h.restoring.length ? h.restoring.join(",") : "-", h.restoring.length ? "stale" : ""], [lag(h.lag)],
  ]));
  fillTable("#cluster-shards", cluster.shards.map(s => {
    const state = s.restoring === null ? "never opened" : (s.restoring ? "RESTORING" : "owned");
    let since = s.owner_since_ms === null ? "" : " since " + new Date(s.owner_since_ms).toISOString();
    if (s.restore_retries) since += ` (restore retried ${s.restore_retries}x, last: ${s.restore_error})`;
    return [
      [s.topic], [String(s.shard)], [s.owner || "-"],
      [state + since, s.restoring ? "stale" : (s.restoring === false ? "ok" : "")],
      [lag(s.lag)], [s.durable_through.map(([p, o]) => `${p}:${o}`).join(" ") || "-"],
      [s.changelog_end === null ? "?" : String(s.changelog_end)],
    ];
  }));
  const error = document.getElementById("cluster-error");
  error.hidden = !cluster.error;
  error.textContent = cluster.error ? "broker unavailable: " + cluster.error : "";
}

function renderQuality(summary) {
  const box = document.getElementById("quality");
  box.replaceChildren();
  for (const [view, q] of Object.entries(summary.quality)) {
    for (const [feature, points] of Object.entries(q.series)) {
      const panel = document.createElement("div");
      const title = document.createElement("h2");
      title.textContent = `${view} · ${feature}`;
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "chart quality-chart");
      svg.setAttribute("data-view", view);
      panel.append(title, svg);
      box.appendChild(panel);
      const marks = points.map(p => p[4]);
      lineChart(svg, [
        { name: "mean", points: points.map(p => [p[0], p[1]]), marks },
        { name: "p50", points: points.map(p => [p[0], p[2]]) },
        { name: "p99", points: points.map(p => [p[0], p[3]]) },
      ], { xFormat: hour });
    }
  }
  if (!box.children.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "no quality table yet: run `streamfeat quality`";
    box.appendChild(p);
  }
}

function render(summary) {
  const ingest = summary.ingest;
  const dlqTotal = Object.values(summary.dead_letters).reduce((a, b) => a + b, 0);
  const lagTotal = Object.values(ingest.consumer_lag).reduce((a, b) => a + b, 0);
  const live = ingest.endpoints > 0;
  text("tile-rate", live && ingest.events_per_s !== null ? niceNumber(ingest.events_per_s) : "-");
  text("tile-events", live ? niceNumber(ingest.events_in) : "no dataflow");
  text("tile-lag", live ? niceNumber(lagTotal) : "-");
  text("tile-dlq", live ? niceNumber(dlqTotal) : "-");
  const s = summary.serving;
  text("tile-latency", s.p50_ms === null ? "-" : `${s.p50_ms.toFixed(1)} / ${s.p99_ms.toFixed(1)} ms`);
  text("tile-state", live ? bytes(ingest.state_bytes) : "-");
  renderViews(summary);
  const h = summary.history;
  lineChart(document.getElementById("chart-ingest"),
    [{ name: "events/s", points: h.map(p => [p.t_ms, p.events_per_s]) }],
    { xFormat: clock, empty: live ? "waiting for a second sample" : "no dataflow metrics endpoint" });
  lineChart(document.getElementById("chart-latency"), [
    { name: "p50", points: h.map(p => [p.t_ms, p.p50_ms]) },
    { name: "p99", points: h.map(p => [p.t_ms, p.p99_ms]) },
  ], { xFormat: clock, empty: "no feature requests yet" });
  barChart(document.getElementById("chart-dlq"),
    Object.entries(summary.dead_letters).map(([label, value]) => ({ label, value })),
    { empty: live ? "no dead letters since the run started (streamfeat status counts the whole topic)" : "no dataflow metrics endpoint" });
  barChart(document.getElementById("chart-lag"),
    Object.entries(ingest.consumer_lag).map(([label, value]) => ({ label, value })),
    { empty: live ? "no partitions read yet" : "no dataflow metrics endpoint" });
  renderQuality(summary);
  renderCluster(summary.cluster);
  text("updated", "updated " + clock(summary.now_ms));
  document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const reply = await fetch("/v1/ops/summary", { cache: "no-store" });
    if (!reply.ok) throw new Error(`GET /v1/ops/summary: HTTP ${reply.status}`);
    render(await reply.json());
    error.hidden = true;
  } catch (exc) {
    error.textContent = String(exc);
    error.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
})();
