"""The collector's page: one self-contained HTML file, no external assets (fleets run
offline). It fetches only the newest rounds, so it stays quick however many are stored.

Each round shows its fleet incarnation (8 characters, the full id on hover), and where a
fleet's incarnation changes the table has a marker row and the chart a dashed line: the
namespace was rebuilt, and round numbers and epochs started again from 0."""

import html

CHART_ROUNDS = 240
TABLE_ROUNDS = 20
REFRESH_SECONDS = 5

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zk-collector on __HOST__</title>
<style>
  :root { --fg: #1d2430; --muted: #6b7380; --line: #2563eb; --band: #bfd3fb; --bg: #f7f8fa; }
  body { font: 15px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg);
         margin: 0 auto; max-width: 1000px; padding: 24px; }
  header { display: flex; justify-content: space-between; align-items: baseline; }
  h1 { font-size: 22px; margin: 0; }
  .muted { color: var(--muted); }
  .cards { display: flex; gap: 12px; margin: 16px 0; }
  .card { background: #fff; border-radius: 8px; padding: 12px 16px; flex: 1;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .card b { display: block; font-size: 24px; }
  svg { background: #fff; border-radius: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08);
        width: 100%; height: 280px; }
  table { width: 100%; border-collapse: collapse; background: #fff; margin-top: 16px;
          border-radius: 8px; overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  th, td { padding: 6px 10px; text-align: right; border-bottom: 1px solid #eef0f3; }
  th:first-child, td:first-child { text-align: left; }
  th { background: #f0f2f5; font-weight: 600; }
  tr.incarnation-change td { text-align: left; background: #fff4e0; color: #8a4b00;
                             font-weight: 600; }
</style>
</head>
<body>
<header>
  <h1>Fleet means</h1>
  <span class="muted">served by <b id="host">__HOST__</b></span>
</header>
<div class="cards">
  <div class="card"><span class="muted">last mean</span><b id="last-mean">-</b></div>
  <div class="card"><span class="muted">last round</span><b id="last-round">-</b></div>
  <div class="card"><span class="muted">rounds stored</span><b id="total">-</b></div>
  <div class="card"><span class="muted">updated</span><b id="updated">-</b></div>
</div>
<svg id="chart" viewBox="0 0 1000 280" preserveAspectRatio="none" role="img"
     aria-label="mean over time"></svg>
<table id="rounds">
  <thead><tr><th>received</th><th>round</th><th>mean</th><th>min</th><th>max</th>
  <th>devices</th><th>leader</th><th>epoch</th><th>incarnation</th></tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const CHART_ROUNDS = __CHART__, TABLE_ROUNDS = __TABLE__, REFRESH_MS = __REFRESH__ * 1000;
const SVG = "http://www.w3.org/2000/svg";
const fmt = (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(2);
const when = (t) => new Date(t * 1000).toLocaleString();
const short = (id) => id ? id.slice(0, 8) : "-";

// Ids of the rounds that start a new incarnation of their fleet: the fleet's previous
// keyed round among those fetched carries another one (keyless seed rows have none).
function incarnationStarts(rounds) {
  const previous = new Map(), starts = new Set();
  for (const r of rounds.slice().reverse().filter(r => r.round !== null)) {
    const fleet = r.fleet ?? "", incarnation = r.incarnation ?? null;
    if (previous.has(fleet) && previous.get(fleet) !== incarnation) starts.add(r.id);
    previous.set(fleet, incarnation);
  }
  return starts;
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(rounds, starts) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  const points = rounds.slice().reverse();
  if (points.length === 0) {
    svg.append(el("text", {x: 500, y: 140, "text-anchor": "middle", fill: "#6b7380"},
                  "no rounds yet"));
    return;
  }
  const lows = points.map(p => p.min ?? p.mean), highs = points.map(p => p.max ?? p.mean);
  let lo = Math.min(...lows), hi = Math.max(...highs);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const left = 60, right = 990, top = 10, bottom = 250;
  const x = (i) => points.length === 1 ? (left + right) / 2
                                       : left + (right - left) * i / (points.length - 1);
  const y = (v) => bottom - (bottom - top) * (v - lo) / (hi - lo);
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    svg.append(el("line", {x1: left, x2: right, y1: y(v), y2: y(v), stroke: "#eef0f3"}));
    svg.append(el("text", {x: left - 8, y: y(v) + 4, "text-anchor": "end",
                           "font-size": 12, fill: "#6b7380"}, v.toFixed(2)));
  }
  const band = points.map((p, i) => `${x(i)},${y(highs[i])}`)
    .concat(points.map((p, i) => `${x(i)},${y(lows[i])}`).reverse());
  svg.append(el("polygon", {id: "band", points: band.join(" "), fill: "var(--band)",
                            opacity: 0.6}));
  svg.append(el("polyline", {id: "mean-line", fill: "none", stroke: "var(--line)",
                             "stroke-width": 2, "data-count": points.length,
                             points: points.map((p, i) => `${x(i)},${y(p.mean)}`).join(" ")}));
  points.forEach((p, i) => {
    if (!starts.has(p.id)) return;
    const at = (x(i - 1) + x(i)) / 2;
    svg.append(el("line", {class: "incarnation-change", "data-incarnation": p.incarnation ?? "",
                           x1: at, x2: at, y1: top, y2: bottom, stroke: "#d97706",
                           "stroke-dasharray": "4 3"}));
    svg.append(el("text", {x: at + 4, y: top + 12, "font-size": 12, fill: "#8a4b00"},
                  `new incarnation ${short(p.incarnation)}`));
  });
  svg.append(el("text", {x: left, y: 272, "font-size": 12, fill: "#6b7380"},
                when(points[0].received_at)));
  svg.append(el("text", {x: right, y: 272, "font-size": 12, fill: "#6b7380",
                         "text-anchor": "end"}, when(points[points.length - 1].received_at)));
}

function cell(text, title) {
  const node = document.createElement("td");
  node.textContent = text;
  if (title) node.title = title;
  return node;
}

function roundRow(r) {
  const row = document.createElement("tr");
  for (const value of [when(r.received_at), r.round ?? "-", fmt(r.mean), fmt(r.min),
                       fmt(r.max), r.count ?? "-", r.leader ?? "-", r.epoch ?? "-"]) {
    row.append(cell(value));
  }
  row.append(cell(short(r.incarnation), r.incarnation));
  return row;
}

// Newest first, so the marker sits below the first round of the new incarnation.
function markerRow(r) {
  const row = document.createElement("tr");
  row.className = "incarnation-change";
  const marker = cell(`new fleet incarnation ${short(r.incarnation)}`,
                      `fleet ${r.fleet ?? "-"}, incarnation ${r.incarnation ?? "none"}`);
  marker.colSpan = 9;
  row.append(marker);
  return row;
}

function drawTable(rounds, starts) {
  const body = document.querySelector("#rounds tbody");
  body.replaceChildren(...rounds.slice(0, TABLE_ROUNDS).flatMap(
    (r) => starts.has(r.id) ? [roundRow(r), markerRow(r)] : [roundRow(r)]));
}

async function refresh() {
  try {
    const [list, summary] = await Promise.all([
      fetch(`api/rounds?limit=${CHART_ROUNDS}`).then(r => r.json()),
      fetch("api/summary").then(r => r.json()),
    ]);
    const starts = incarnationStarts(list.rounds);
    drawChart(list.rounds, starts);
    drawTable(list.rounds, starts);
    const last = list.rounds[0];
    document.getElementById("last-mean").textContent = last ? fmt(last.mean) : "-";
    document.getElementById("last-round").textContent = last ? (last.round ?? "-") : "-";
    document.getElementById("total").textContent = summary.rounds;
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.loaded = "yes";
  } catch (error) {
    document.getElementById("updated").textContent = "offline";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""


def render_page(hostname: str) -> str:
    return (PAGE.replace("__HOST__", html.escape(hostname))
            .replace("__CHART__", str(CHART_ROUNDS))
            .replace("__TABLE__", str(TABLE_ROUNDS))
            .replace("__REFRESH__", str(REFRESH_SECONDS)))
