// The page's script: the pickers, the chart with its time axis, the table of newest
// rounds. page.py inlines it into page.html, whose script element first sets TABLE_ROUNDS,
// REFRESH_MS and DEFAULT_RANGE (and "use strict").
//
// The chart places each point at its bucket's time within the range, so a fleet that was
// silent leaves a gap in time rather than a kink in the line. The time axis is labelled in
// the reader's local time, with ticks on round local times: every 10 minutes for an hour,
// 3 hours for a day, each day of a week, each week of a month, each month of a year (a date
// wherever the day changes, the year in January).

const SVG = "http://www.w3.org/2000/svg";
const MINUTE = 60, HOUR = 3600, DAY = 86400;
// Tick spacings for ranges under two months: the first giving at most 8 ticks is used.
const TICK_STEPS = [10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR,
                    12 * HOUR, DAY, 7 * DAY];
const LEFT = 60, RIGHT = 990, TOP = 10, BOTTOM = 260;
// Below this many points each is also drawn as a dot on its min..max bar: a line through
// a few points, or a band around one, would hardly show.
const DOTS_BELOW = 60;
const fmt = (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(2);
const when = (t) => new Date(t * 1000).toLocaleString();
const short = (id) => id ? id.slice(0, 8) : "-";
const fleetPicker = document.getElementById("fleet");
const rangePicker = document.getElementById("range");
const asked = new URLSearchParams(location.search);
let wantedFleet = asked.get("fleet");
let latestRefresh = 0;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function dateLabel(date, withYear) {
  return date.toLocaleDateString(undefined, withYear ? {month: "short", year: "numeric"}
                                                     : {month: "short", day: "numeric"});
}

// [{t, label}] for the time axis of [start, end), in seconds.
function timeTicks(start, end) {
  const first = new Date(start * 1000);
  first.setHours(0, 0, 0, 0);
  const ticks = [];
  if (end - start > 60 * DAY) {
    first.setDate(1);
    for (const d = first; d.getTime() < end * 1000; d.setMonth(d.getMonth() + 1)) {
      const t = d.getTime() / 1000;
      if (t >= start) ticks.push({t, label: d.getMonth() === 0 ? dateLabel(d, true)
                                   : d.toLocaleDateString(undefined, {month: "short"})});
    }
    return ticks;
  }
  const step = TICK_STEPS.find((s) => (end - start) / s <= 8) ?? TICK_STEPS.at(-1);
  if (step >= DAY) {
    for (const d = first; d.getTime() < end * 1000; d.setDate(d.getDate() + step / DAY)) {
      const t = d.getTime() / 1000;
      if (t >= start) ticks.push({t, label: dateLabel(d, false)});
    }
    return ticks;
  }
  for (let t = first.getTime() / 1000; t < end; t += step) {
    const d = new Date(t * 1000);
    const midnight = d.getHours() === 0 && d.getMinutes() === 0;
    if (t >= start) ticks.push({t, label: midnight ? dateLabel(d, false)
                                : d.toLocaleTimeString(undefined, {hour: "2-digit",
                                                                   minute: "2-digit"})});
  }
  return ticks;
}

function drawAxes(svg, series, x, y, lo, hi) {
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(el("line", {x1: LEFT, x2: RIGHT, y1: y(v), y2: y(v), stroke: "#eef0f3"}));
    svg.append(el("text", {x: LEFT - 8, y: y(v) + 4, "text-anchor": "end",
                           "font-size": 12, fill: "#6b7380"}, v.toFixed(2)));
  }
  const axis = el("g", {id: "time-axis"});
  for (const tick of timeTicks(series.start, series.end)) {
    axis.append(el("line", {x1: x(tick.t), x2: x(tick.t), y1: BOTTOM, y2: BOTTOM + 5,
                            stroke: "#6b7380"}));
    axis.append(el("text", {class: "tick", x: x(tick.t), y: BOTTOM + 20, "font-size": 12,
                            fill: "#6b7380", "text-anchor": "middle"}, tick.label));
  }
  axis.append(el("line", {x1: LEFT, x2: RIGHT, y1: BOTTOM, y2: BOTTOM, stroke: "#c9ced6"}));
  svg.append(axis);
}

function drawChart(series) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  svg.dataset.range = series.range;
  const points = series.points;
  // A point sits in the middle of its bucket.
  const x = (t) => LEFT + (RIGHT - LEFT) * (t - series.start) / (series.end - series.start);
  const mid = (p) => x(p.t + series.step / 2);
  let lo = Math.min(...points.map(p => p.min)), hi = Math.max(...points.map(p => p.max));
  if (points.length === 0) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08;
  const y = (v) => BOTTOM - (BOTTOM - TOP) * (v - lo + pad) / (hi - lo + 2 * pad);
  drawAxes(svg, series, x, y, lo, hi);
  if (points.length === 0) {
    svg.append(el("text", {x: 500, y: 140, "text-anchor": "middle", fill: "#6b7380"},
                  series.empty ?? `no rounds from this fleet in the last ${series.range}`));
  }
  const band = points.map(p => `${mid(p)},${y(p.max)}`)
    .concat(points.map(p => `${mid(p)},${y(p.min)}`).reverse());
  svg.append(el("polygon", {id: "band", points: band.join(" "), fill: "var(--band)",
                            opacity: 0.6}));
  svg.append(el("polyline", {id: "mean-line", fill: "none", stroke: "var(--line)",
                             "stroke-width": 2, "data-count": points.length,
                             "data-rounds": points.reduce((n, p) => n + p.rounds, 0),
                             points: points.map(p => `${mid(p)},${y(p.mean)}`).join(" ")}));
  if (points.length < DOTS_BELOW) {
    for (const p of points) {
      svg.append(el("line", {x1: mid(p), x2: mid(p), y1: y(p.max), y2: y(p.min),
                             stroke: "var(--band)", "stroke-width": 6}));
      svg.append(el("circle", {cx: mid(p), cy: y(p.mean), r: 3, fill: "var(--line)"}));
    }
  }
  for (const start of series.incarnations) {
    const at = x(start.first_at), leftward = at > (LEFT + RIGHT) / 2;
    svg.append(el("line", {class: "incarnation-change",
                           "data-incarnation": start.incarnation ?? "", x1: at, x2: at,
                           y1: TOP, y2: BOTTOM, stroke: "#d97706", "stroke-dasharray": "4 3"}));
    svg.append(el("text", {x: leftward ? at - 4 : at + 4, y: TOP + 12, "font-size": 12,
                           fill: "#8a4b00", "text-anchor": leftward ? "end" : "start"},
                  `new incarnation ${short(start.incarnation)}`));
  }
}

// Ids of the rounds that start a new incarnation of their fleet: the previous keyed
// round fetched carries another one (keyless seed rows have none).
function incarnationStarts(rounds) {
  let previous, starts = new Set();
  for (const r of rounds.slice().reverse().filter(r => r.round !== null)) {
    const incarnation = r.incarnation ?? null;
    if (previous !== undefined && previous !== incarnation) starts.add(r.id);
    previous = incarnation;
  }
  return starts;
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

// One more round is fetched than shown, to tell whether the oldest shown starts one.
function drawTable(rounds) {
  const starts = incarnationStarts(rounds);
  const body = document.querySelector("#rounds tbody");
  body.replaceChildren(...rounds.slice(0, TABLE_ROUNDS).flatMap(
    (r) => starts.has(r.id) ? [roundRow(r), markerRow(r)] : [roundRow(r)]));
  const last = rounds[0];
  document.getElementById("last-mean").textContent = last ? fmt(last.mean) : "-";
  document.getElementById("last-round").textContent = last ? (last.round ?? "-") : "-";
}

// The fleets seen, by name (the absent fleet is ""); the one asked for if it is among
// them, else the one heard from last. Options are rebuilt only when a fleet appears.
function listFleets(fleets) {
  const names = fleets.map(f => f.fleet ?? "");
  if (names.join("\n") !== [...fleetPicker.options].map(o => o.value).join("\n")) {
    fleetPicker.replaceChildren(...names.map(name => new Option(name || "(no fleet)", name)));
  }
  const newest = fleets.reduce((a, b) => (b.last_at > a.last_at ? b : a), fleets[0]);
  fleetPicker.value = names.includes(wantedFleet) ? wantedFleet : (newest?.fleet ?? "");
  wantedFleet = fleetPicker.value;
  return fleets[names.indexOf(wantedFleet)];
}

// The picked fleet and range in the address, so a reload or a link shows the same.
function remember() {
  const query = new URLSearchParams({fleet: fleetPicker.value, range: rangePicker.value});
  history.replaceState(null, "", `?${query}`);
}

// A refresh overtaken by a newer one (a pick made while it was loading) draws nothing.
async function refresh() {
  const ticket = ++latestRefresh;
  try {
    const summary = await fetch("api/summary").then(r => r.json());
    if (ticket !== latestRefresh) return;
    const fleet = listFleets(summary.fleets);
    let series, rounds = [];
    if (fleet) {
      const name = encodeURIComponent(fleetPicker.value);
      const [found, list] = await Promise.all([
        fetch(`api/series?fleet=${name}&range=${rangePicker.value}`).then(r => r.json()),
        fetch(`api/rounds?fleet=${name}&limit=${TABLE_ROUNDS + 1}`).then(r => r.json()),
      ]);
      [series, rounds] = [found, list.rounds];
    } else {
      const now = Date.now() / 1000;
      series = {range: rangePicker.value, start: now - HOUR, end: now, step: 1, points: [],
                incarnations: [], empty: "no rounds yet"};
    }
    if (ticket !== latestRefresh) return;
    document.getElementById("total").textContent = fleet ? fleet.rounds : 0;
    drawChart(series);
    drawTable(rounds);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.loaded = "yes";
  } catch (error) {
    document.getElementById("updated").textContent = "offline";
  }
}

rangePicker.value = asked.get("range");
if (!rangePicker.value) rangePicker.value = DEFAULT_RANGE;
for (const picker of [fleetPicker, rangePicker]) {
  picker.addEventListener("change", () => {
    wantedFleet = fleetPicker.value;
    remember();
    refresh();
  });
}
refresh();
setInterval(refresh, REFRESH_MS);
