/* fedstrata dashboard: draws the JSON endpoints with uPlot and polls for new rounds.
 * window.__fs exposes the state for tests and the benchmark: cursor (last round
 * drawn), points per chart, drawnAt[round] (Date.now() when a chart first drew it),
 * firstPaintMs / heatReadyMs (performance.now() when the metric charts / the heat map
 * first drew data). */
"use strict";

const POINTS = 500;
const SIDE_EVERY_MS = 2000;
const COLORS = ["#2f6db3", "#d0632a", "#2a9d5b"];
const state = { cursor: -1, points: {}, drawnAt: {}, firstPaintMs: null, heatReadyMs: null, charts: {},
  data: {}, meta: null, finished: false, errors: 0 };
window.__fs = state;

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, text = "") => {
  const node = Object.assign(document.createElement(tag), props);
  if (text) node.textContent = text;
  return node;
};

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(`${url}: ${body.error || response.status}`);
  return body;
}

function showError(err) {
  const box = $("#error");
  box.hidden = err === null;
  box.textContent = err === null ? "" : String(err.message || err);
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "—";
  if (Math.abs(v) >= 1e6) return v.toExponential(2);
  return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
}

function tickLabels(u, splits) {  /* as many decimals as the tick spacing needs */
  if (splits.length < 2) return splits.map((v) => fmt(v));
  const step = Math.abs(splits[1] - splits[0]);
  const digits = step > 0 ? Math.min(8, Math.max(0, Math.ceil(-Math.log10(step)))) : 2;
  return splits.map((v) => (Math.abs(v) >= 1e6 ? v.toExponential(1) : v.toFixed(digits)));
}

function chartWidth(node) { return Math.max(240, node.clientWidth || 300); }

function lineChart(node, title, seriesLabels, onDraw) {
  const opts = {
    title, width: chartWidth(node), height: 160, legend: { show: seriesLabels.length > 1 },
    scales: { x: { time: false } },
    axes: [{ label: "round", size: 30 }, { size: 72, values: tickLabels }],
    series: [{ label: "round" }].concat(seriesLabels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
      points: { show: false } }))),
    hooks: { draw: [(u) => onDraw && onDraw(u)] },
  };
  const empty = [[]].concat(seriesLabels.map(() => []));
  return new uPlot(opts, empty, node);
}

/* ---- the twelve metrics ------------------------------------------------------- */

function buildGroups(meta) {
  const root = $("#groups");
  for (const group of meta.groups) {
    const box = el("div", { className: "group" });
    box.append(el("h3", {}, group));
    const grid = el("div", { className: "group-charts" });
    box.append(grid);
    root.append(box);
    for (const m of meta.metrics.filter((d) => d.group === group)) {
      const node = el("div", { className: "chart metric", id: `chart-${m.key}`,
        title: `${m.formula} (${m.better} is better)` });
      node.dataset.key = m.key;
      node.dataset.points = "0";
      grid.append(node);
      const title = m.unit ? `${m.title} [${m.unit}]` : m.title;
      state.data[m.key] = [[], []];
      state.charts[m.key] = lineChart(node, title, [m.title], (u) => onMetricDraw(m.key, u));
    }
  }
}

function onMetricDraw(key, u) {
  const xs = u.data[0];
  const node = u.root.parentNode;
  node.dataset.points = String(xs.length);
  node.classList.toggle("empty", xs.length === 0);
  state.points[key] = xs.length;
  if (xs.length) {
    const last = xs[xs.length - 1];
    if (state.drawnAt[last] === undefined) state.drawnAt[last] = Date.now();
    node.dataset.lastRound = String(last);
  }
}

function applyMetrics(resp) {
  let refetch = false;
  for (const [key, s] of Object.entries(resp.series)) {
    const data = state.data[key];
    if (!data) continue;
    if (resp.full) {
      state.data[key] = [s.x, s.y];
    } else if (s.x.length) {
      data[0] = data[0].concat(s.x);
      data[1] = data[1].concat(s.y);
      refetch = refetch || data[0].length > 2 * POINTS;
    }
    state.charts[key].setData(state.data[key]);
  }
  state.cursor = resp.cursor;
  state.finished = resp.finished;
  $("#cursor").textContent = `round ${resp.cursor < 0 ? "—" : resp.cursor} (${resp.rounds} stored)`;
  return refetch;
}

async function pollMetrics() {
  let since = state.cursor;
  for (;;) {
    try {
      const resp = await getJSON(`api/metrics?since=${since}&points=${POINTS}`);
      since = applyMetrics(resp) ? -1 : resp.cursor;
      showError(null);
      setStatus();
      if (resp.finished) return;
    } catch (err) {
      showError(err);
    }
    await new Promise((r) => setTimeout(r, state.meta.poll_ms));
  }
}

function setStatus() {
  const status = $("#run-status");
  status.textContent = state.finished ? "finished" : "live";
  status.className = `status ${state.finished ? "finished" : "live"}`;
}

/* ---- privacy, alerts, tiers, devices ------------------------------------------ */

function renderPrivacy(p) {
  if (!state.charts.privacy) {
    state.charts.privacy = lineChart($("#chart-privacy"), "ε spent vs plan", ["spent", "plan"]);
  }
  const xs = p.spent.x;
  $("#chart-privacy").hidden = !p.enabled;
  state.charts.privacy.setData([xs, p.spent.y, p.plan.x.length ? p.plan.y : xs.map(() => null)]);
  const gauge = $("#eps-gauge");
  if (p.budget_eps === null || p.spent_eps === null) {
    $("#eps-text").textContent = p.enabled ? "no round spent ε yet" : "no central DP in this run";
    return;
  }
  gauge.max = p.budget_eps;
  gauge.value = p.spent_eps;
  gauge.low = p.planned_eps ?? p.budget_eps;
  gauge.high = p.budget_eps * 0.95;
  const ahead = p.planned_eps !== null && p.spent_eps > p.planned_eps * 1.0001;
  $("#eps-text").textContent = `ε ${fmt(p.spent_eps)} of ${fmt(p.budget_eps)} spent at round ` +
    `${p.round}; plan ${fmt(p.planned_eps)}${ahead ? " — AHEAD of plan" : ""}`;
}

function fillTable(id, rows, cells, rowClass) {
  const body = $(`#${id} tbody`);
  body.replaceChildren(...rows.map((row) => {
    const tr = el("tr", { className: rowClass ? rowClass(row) : "" });
    for (const cell of cells(row)) tr.append(el("td", {}, String(cell)));
    return tr;
  }));
}

function renderAlerts(a) {
  $("#alert-count").textContent = String(a.alerts.length);
  fillTable("alerts-table", a.alerts, (x) => [x.round, x.severity, x.rule, fmt(x.value),
    x.message], (x) => `sev-${x.severity}`);
}

function renderTiers(t) {
  if (!state.charts.tiers) {
    state.charts.tiers = lineChart($("#chart-tiers"), "ingress bytes per round",
      ["center", "region", "edge"]);
  }
  const xs = t.ingress.center.x;
  $("#tiers-note").hidden = t.tree;
  state.charts.tiers.setData([xs, t.ingress.center.y, t.ingress.region.y, t.ingress.edge.y]);
  fillTable("nodes-table", t.nodes, (n) => [n.node, n.tier, n.rounds, fmt(n.ingress_bytes),
    n.clients, fmt(n.seconds)]);
}

function renderDevices(d) {
  $("#device-count").textContent = `(${d.devices} devices, ${d.straggler_count} stragglers)`;
  $("#straggler-count").textContent = String(d.straggler_count);
  $("#devices-note").hidden = d.devices > 0;
  const cls = (r) => (r.straggler ? "straggler" : "");
  fillTable("slowest-table", d.slowest, (r) => [r.client_id, r.tier ?? "—",
    fmt(r.mean_round_s), fmt(r.utilization_mean), r.rounds_selected, r.straggler_rounds], cls);
  fillTable("straggler-table", d.stragglers, (r) => [r.client_id, r.tier ?? "—",
    r.straggler_rounds, r.rounds_selected, fmt(r.mean_round_s)], cls);
  if (d.heat) drawHeat(d.heat);
}

function heatColor(v, top) {  /* 0 (idle, dark red) .. top (the busiest cell, green) */
  const t = top > 0 ? Math.max(0, Math.min(1, v / top)) : 0;
  return `hsl(${Math.round(120 * t)}, 70%, ${Math.round(35 + 20 * t)}%)`;
}

function drawHeat(heat) {
  heat.top = Math.max(0, ...heat.values.flat().filter((v) => v !== null));
  state.heat = heat;
  if (state.heatReadyMs === null) state.heatReadyMs = performance.now();
  $("#heat-scale").textContent = `colour: utilization 0 (red) … ${fmt(heat.top)} (green)` +
    (heat.complete ? "" : " — reading older rounds…");
  const node = $("#chart-heat");
  node.dataset.cells = String(heat.values.length * (heat.round_starts.length || 0));
  node.dataset.roundEnd = String(heat.round_end);
  const xs = heat.round_starts;
  const data = [xs, xs.map(() => null)];
  if (state.charts.heat) { state.charts.heat.setData(data); return; }
  const opts = {
    width: chartWidth(node), height: 260, legend: { show: false },
    scales: { x: { time: false, range: () => [xs[0] ?? 0, state.heat.round_end] },
      y: { range: () => [0, state.heat.device_end] } },
    axes: [{ label: "round", size: 30 }, { label: "device", size: 60 }],
    series: [{}, { label: "utilization", show: true, stroke: "transparent" }],
    hooks: { draw: [paintHeat] },
  };
  state.charts.heat = new uPlot(opts, data, node);
}

function paintHeat(u) {  /* a uPlot draw hook: cells on the chart's own scales */
  const h = state.heat;
  const ctx = u.ctx;
  ctx.save();
  h.values.forEach((row, i) => {
    const y0 = u.valToPos(h.device_starts[i], "y", true);
    const y1 = u.valToPos(h.device_starts[i + 1] ?? h.device_end, "y", true);
    row.forEach((v, j) => {
      if (v === null) return;
      const x0 = u.valToPos(h.round_starts[j], "x", true);
      const x1 = u.valToPos(h.round_starts[j + 1] ?? h.round_end, "x", true);
      ctx.fillStyle = heatColor(v, h.top);
      ctx.fillRect(x0, y1, Math.max(1, x1 - x0), Math.max(1, y0 - y1));
    });
  });
  ctx.restore();
}

async function refreshSide() {
  const jobs = [
    getJSON(`api/privacy?points=${POINTS}`).then(renderPrivacy),
    getJSON("api/alerts?limit=200").then(renderAlerts),
    getJSON(`api/tiers?points=${POINTS}`).then(renderTiers),
  ];
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) showError(failed.reason);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function sideLoop() {
  for (;;) {
    const finished = state.finished;
    await refreshSide();
    if (finished) return;
    await sleep(SIDE_EVERY_MS);
  }
}

async function devicesLoop() {  /* faster while the heat map still reads older rounds */
  for (;;) {
    const finished = state.finished;
    let pending = false;
    try {
      const d = await getJSON("api/devices?top=20");
      renderDevices(d);
      pending = d.devices > 0 && (d.heat === null || !d.heat.complete);
    } catch (err) {
      showError(err);
    }
    if (finished && !pending) return;
    await sleep(pending ? 500 : SIDE_EVERY_MS);
  }
}

async function main() {
  const meta = await getJSON("api/meta");
  state.meta = meta;
  $("#run-id").textContent = meta.run_id;
  buildGroups(meta);
  applyMetrics(await getJSON(`api/metrics?since=-1&points=${POINTS}`));
  await new Promise((r) => requestAnimationFrame(() => r()));
  performance.mark("fs-charts-drawn");
  state.firstPaintMs = performance.now();
  setStatus();
  sideLoop();
  devicesLoop();
  if (!state.finished || meta.live) pollMetrics();
}

main().catch(showError);
