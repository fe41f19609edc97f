// Live dashboard: fetch /api/panels every REFRESH_MS and redraw. No external resources.
"use strict";

// The server writes the period into a meta tag: its CSP allows no inline script.
const REFRESH_MS = Number(document.querySelector('meta[name="refresh-ms"]').content) || 5000;

const state = (() => {
  const q = new URLSearchParams(window.location.search);
  if (q.has("token")) {
    // The token that opened the page has set the session cookie; keep it out of the address bar.
    q.delete("token");
    window.history.replaceState(null, "", `${window.location.pathname}${q.size ? `?${q}` : ""}`);
  }
  return {
    minutes: q.get("minutes") || "60",
    type: q.get("type") || "",
    severity: q.get("severity") || "",
    location: q.get("location") || "",
    sensor: q.get("sensor") || "",
  };
})();
let timer = null;
let renders = 0;
const PLOT_CFG = { displayModeBar: false, responsive: true };
const SEV_COLORS = { CRITICAL: "#d73027", WARNING: "#f28e2b", INFO: "#4575b4" };
const LATENCY_TITLE = "produce → commit latency per query (s)";
const DATA_AGE_TITLE = "data age: newest event time → commit (s)";
const BASE_LAYOUT = {
  margin: { l: 52, r: 12, t: 28, b: 36 }, font: { size: 11 },
  paper_bgcolor: "#fff", plot_bgcolor: "#fff", legend: { orientation: "h", y: -0.18 },
};

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(2)));
  return String(v);
}
function fmtTime(s) { return s ? String(s).slice(0, 19) : "–"; }

function query() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v) q.set(k, v);
  return q.toString();
}

// Show a panel's body, or its "waiting for data" / error message instead.
function panelState(id, panel) {
  const el = document.getElementById(id);
  let msg = el.querySelector(":scope > .msg");
  if (!msg) {
    msg = document.createElement("div");
    msg.className = "msg";
    el.insertBefore(msg, el.querySelector(".body"));
  }
  const body = el.querySelector(".body");
  if (!panel || panel.status !== "ok") {
    const text = panel ? (panel.message || panel.status) : "no answer";
    msg.innerHTML = `<div class="${panel && panel.status === "error" ? "error" : "waiting"}"
      data-testid="waiting-${id}">${esc(text)}</div>`;
    body.style.display = "none";
    el.dataset.status = panel ? panel.status : "none";
    return false;
  }
  msg.innerHTML = "";
  const wasHidden = body.style.display === "none";
  body.style.display = "";
  el.dataset.status = "ok";
  if (wasHidden) body.querySelectorAll(".js-plotly-plot").forEach((p) => Plotly.Plots.resize(p));
  return true;
}

// columns: [{key, label, num?, cls?(row)}]; rows: list of objects.
function renderTable(id, name, columns, rows, keyOf) {
  const head = columns.map((c) => `<th>${esc(c.label)}</th>`).join("");
  const body = rows.map((r) => {
    const tds = columns.map((c) => {
      const v = r[c.key];
      const text = c.time ? fmtTime(v) : fmt(v);
      const cls = [c.num ? "num" : "", c.cls ? c.cls(r) : ""].join(" ").trim();
      return `<td data-col="${esc(c.key)}"${cls ? ` class="${cls}"` : ""}>${esc(text)}</td>`;
    }).join("");
    return `<tr data-key="${esc(keyOf ? keyOf(r) : "")}">${tds}</tr>`;
  }).join("");
  document.getElementById(id).innerHTML =
    `<table data-table="${name}" data-rows="${rows.length}"><thead><tr>${head}</tr></thead>` +
    `<tbody>${body}</tbody></table>`;
}

function plot(id, traces, layout, meta) {
  const div = document.getElementById(id);
  Plotly.react(div, traces, Object.assign({}, BASE_LAYOUT, layout), PLOT_CFG);
  for (const [k, v] of Object.entries(meta || {})) div.dataset[k] = String(v);
}

function renderPipeline(p) {
  if (!panelState("panel-pipeline", p)) return;
  const names = Object.keys(p.series).sort();
  plot("plot-rate", names.map((n) => ({ x: p.series[n].t, y: p.series[n].rows_per_second,
    name: n, mode: "lines+markers", marker: { size: 4 } })),
    { title: { text: "events/s (input rows/s per query)", font: { size: 12 } },
      xaxis: { type: "date" }, yaxis: { title: { text: "rows/s" }, rangemode: "tozero" } },
    { queries: names.length });
  const seconds = (ms) => ms.map((v) => (v === null ? null : v / 1000));
  // Produce time is the Kafka record timestamp: the wait of each batch's oldest record.
  plot("plot-latency", names.map((n) => ({ x: p.series[n].t,
    y: seconds(p.series[n].produce_to_commit_ms),
    name: n, mode: "lines+markers", marker: { size: 4 } })),
    { title: { text: LATENCY_TITLE, font: { size: 12 } },
      xaxis: { type: "date" }, yaxis: { title: { text: "seconds" }, rangemode: "tozero" } },
    { queries: names.length });
  // Event time says how old the readings were, not how long the pipeline took.
  plot("plot-data-age", names.map((n) => ({ x: p.series[n].t,
    y: seconds(p.series[n].data_age_ms),
    name: n, mode: "lines+markers", marker: { size: 4 } })),
    { title: { text: DATA_AGE_TITLE, font: { size: 12 } },
      xaxis: { type: "date" }, yaxis: { title: { text: "seconds" }, rangemode: "tozero" } },
    { queries: names.length });
  renderTable("table-pipeline", "pipeline", [
    { key: "query_name", label: "query" }, { key: "batch_id", label: "batch", num: true },
    { key: "batch_time", label: "batch time (UTC)", time: true },
    { key: "input_rows", label: "input rows", num: true },
    { key: "input_rows_per_second", label: "in rows/s", num: true },
    { key: "processed_rows_per_second", label: "processed rows/s", num: true },
    { key: "batch_duration_ms", label: "batch ms", num: true },
    { key: "produce_to_commit_ms", label: "produce → commit ms (oldest)", num: true },
    { key: "produce_to_commit_min_ms", label: "produce → commit ms (newest)", num: true },
    { key: "data_age_ms", label: "data age ms", num: true },
    { key: "rows_dropped_late", label: "dropped late", num: true },
    { key: "state_rows", label: "state rows", num: true },
  ], p.latest, (r) => r.query_name);
}

function fillSelect(id, values, selected) {
  const sel = document.getElementById(id);
  const opts = values.slice();
  if (selected && !opts.includes(selected)) opts.unshift(selected);
  const html = `<option value="">all</option>` +
    opts.map((v) => `<option value="${esc(v)}">${esc(v)}</option>`).join("");
  if (sel.dataset.html !== html) { sel.innerHTML = html; sel.dataset.html = html; }
  sel.value = selected || "";
}

function renderAlerts(p) {
  document.getElementById("kpi-alerts").textContent = p && p.status === "ok" ? fmt(p.total_period) : "–";
  if (!panelState("panel-alerts", p)) return;
  fillSelect("f-type", p.options.alert_type, state.type);
  fillSelect("f-severity", p.options.severity, state.severity);
  fillSelect("f-location", p.options.location, state.location);
  const shown = p.rows.length < p.total ? ` (newest ${p.rows.length} shown)` : "";
  document.getElementById("alerts-total").textContent = `${p.total} alerts${shown}`;
  renderTable("table-alerts", "alerts", [
    { key: "event_time", label: "event time (UTC)", time: true },
    { key: "sensor_id", label: "sensor" }, { key: "location", label: "location" },
    { key: "alert_type", label: "type" },
    { key: "severity", label: "severity", cls: (r) => `sev-${r.severity}` },
    { key: "metric", label: "metric" }, { key: "value", label: "value", num: true },
    { key: "threshold", label: "threshold", num: true }, { key: "details", label: "details" },
  ], p.rows, (r) => r.alert_id);
}

function renderSensor(choice, p) {
  if (choice && choice.status === "ok") {
    const sel = document.getElementById("f-sensor");
    const html = choice.sensors.map((s) => `<option value="${esc(s)}">${esc(s)}</option>`).join("");
    if (sel.dataset.html !== html) { sel.innerHTML = html; sel.dataset.html = html; }
    sel.value = choice.selected || "";
  }
  if (!panelState("panel-sensor", p)) return;
  document.getElementById("sensor-source").textContent = p.source;
  const metrics = ["temperature", "humidity", "pressure"];
  const units = { temperature: "°C", humidity: "%", pressure: "hPa" };
  const colors = { temperature: "#e15759", humidity: "#4e79a7", pressure: "#59a14f" };
  const traces = metrics.map((m, i) => ({ x: p.t, y: p[m], name: m, mode: "lines",
    line: { color: colors[m], width: 1.6 }, yaxis: i ? `y${i + 1}` : "y", xaxis: "x" }));
  let markers = 0;
  const shapes = [];
  metrics.forEach((m, i) => {
    const hits = p.alerts.filter((a) => a.metric === m && a.value !== null);
    markers += hits.length;
    if (hits.length) traces.push({ x: hits.map((a) => a.event_time), y: hits.map((a) => a.value),
      text: hits.map((a) => `${a.alert_type} (${a.severity})`), hoverinfo: "text+x+y",
      name: `alerts: ${m}`, mode: "markers", yaxis: i ? `y${i + 1}` : "y", xaxis: "x",
      marker: { symbol: "x", size: 11, color: hits.map((a) => SEV_COLORS[a.severity] || "#000"),
                line: { width: 2 } } });
  });
  const timeOnly = p.alerts.filter((a) => a.metric === null || a.value === null);
  for (const a of timeOnly) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: a.event_time, x1: a.event_time,
      y0: 0, y1: 1, line: { color: SEV_COLORS[a.severity] || "#000", dash: "dot", width: 1.5 } });
  }
  const layout = {
    grid: { rows: 3, columns: 1, shared_xaxes: true, pattern: "independent" },
    xaxis: { type: "date", anchor: "y3" },
    yaxis: { title: { text: units.temperature }, domain: [0.68, 1] },
    yaxis2: { title: { text: units.humidity }, domain: [0.35, 0.65] },
    yaxis3: { title: { text: units.pressure }, domain: [0, 0.32] },
    shapes, showlegend: true,
    annotations: timeOnly.map((a) => ({ x: a.event_time, y: 1, xref: "x", yref: "paper",
      text: a.alert_type, showarrow: false, yanchor: "bottom", font: { size: 10 } })),
    title: { text: `${p.sensor}: alerts marked ✕ (dotted: alerts without a value)`, font: { size: 12 } },
  };
  plot("plot-sensor", traces, layout,
    { sensor: p.sensor, points: p.t.length, alerts: p.alerts.length, alertMarkers: markers });
}

function renderLocations(p) {
  if (!panelState("panel-locations", p)) return;
  const x = p.rows.map((r) => r.location);
  plot("plot-locations", [{
    type: "bar", x, base: p.rows.map((r) => r.min_temperature),
    y: p.rows.map((r) => r.max_temperature - r.min_temperature), name: "temperature min–max",
    marker: { color: "#f28e2b" },
    text: p.rows.map((r) => `${fmt(r.min_temperature)} – ${fmt(r.max_temperature)}`),
    textposition: "outside", hoverinfo: "x+text" }],
    { title: { text: "temperature range per location (°C)", font: { size: 12 } },
      showlegend: false }, { locations: x.length });
  renderTable("table-locations", "locations", [
    { key: "location", label: "location" },
    { key: "window_start", label: "window (UTC)", time: true },
    { key: "readings", label: "readings", num: true }, { key: "sensors", label: "sensors", num: true },
    { key: "min_temperature", label: "min °C", num: true }, { key: "max_temperature", label: "max °C", num: true },
    { key: "min_humidity", label: "min %", num: true }, { key: "max_humidity", label: "max %", num: true },
    { key: "min_pressure", label: "min hPa", num: true }, { key: "max_pressure", label: "max hPa", num: true },
  ], p.rows, (r) => r.location);
}

function renderAlertCounts(p) {
  if (!panelState("panel-alert-counts", p)) return;
  const types = p.by_type.map((r) => r.alert_type);
  const sevs = ["CRITICAL", "WARNING", "INFO"].filter((s) => p.rows.some((r) => r.severity === s));
  const traces = sevs.map((s) => ({ type: "bar", name: s, x: types, marker: { color: SEV_COLORS[s] },
    y: types.map((t) => (p.rows.find((r) => r.alert_type === t && r.severity === s) || { alerts: 0 }).alerts) }));
  plot("plot-alert-counts", traces, { barmode: "stack", xaxis: { tickangle: -25, automargin: true },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
    yaxis: { title: { text: "alerts" } } }, { types: types.length });
  renderTable("table-alert-counts", "alert_counts", [
    { key: "alert_type", label: "type" }, { key: "alerts", label: "alerts", num: true },
  ], p.by_type, (r) => r.alert_type);
}

function renderQuarantine(p) {
  document.getElementById("kpi-quarantine").textContent = p && p.status === "ok" ? fmt(p.records) : "–";
  if (!panelState("panel-quarantine", p)) return;
  const rows = p.rows.slice().reverse();
  plot("plot-quarantine", [{ type: "bar", orientation: "h", y: rows.map((r) => r.reason),
    x: rows.map((r) => r.records), marker: { color: "#76b7b2" } }],
    { yaxis: { automargin: true }, xaxis: { title: { text: "records" } },
      title: { text: `${p.records} quarantined records`, font: { size: 12 } } }, { reasons: rows.length });
  renderTable("table-quarantine", "quarantine", [
    { key: "reason", label: "reason" }, { key: "records", label: "records", num: true },
  ], p.rows, (r) => r.reason);
}

function renderActive(p) {
  const el = document.getElementById("kpi-active");
  const ok = p && p.status === "ok";
  el.textContent = ok ? fmt(p.total) : "–";
  el.title = ok ? `${p.meaning}: ${p.by_type.map((r) => `${r.alert_type} ${r.active}`).join(", ") || "none"}` : "";
  el.dataset.meaning = ok ? p.meaning : "";
}

function renderStatus(p) {
  const ok = p && p.status === "ok";
  document.getElementById("kpi-online").textContent = ok ? fmt(p.counts.ONLINE || 0) : "–";
  document.getElementById("kpi-offline").textContent = ok ? fmt(p.counts.OFFLINE || 0) : "–";
  if (!panelState("panel-status", p)) return;
  const labels = Object.keys(p.counts).sort();
  plot("plot-status", [{ type: "pie", hole: 0.55, labels, values: labels.map((l) => p.counts[l]),
    sort: false, textinfo: "label+value",
    marker: { colors: labels.map((l) => (l === "ONLINE" ? "#1a9850" : l === "OFFLINE" ? "#d73027" : "#999")) } }],
    { showlegend: false, margin: { l: 10, r: 10, t: 10, b: 10 } }, { statuses: labels.length });
  renderTable("table-status", "status", [
    { key: "sensor_id", label: "sensor" }, { key: "location", label: "location" },
    { key: "status", label: "status", cls: (r) => `st-${r.status}` },
    { key: "last_event_time", label: "last reading (UTC)", time: true },
    { key: "last_temperature", label: "°C", num: true }, { key: "last_humidity", label: "%", num: true },
    { key: "last_pressure", label: "hPa", num: true }, { key: "open_alerts", label: "open alerts", num: true },
  ], p.rows, (r) => r.sensor_id);
}

async function refresh() {
  clearTimeout(timer);
  const updated = document.getElementById("updated");
  try {
    const res = await fetch(`/api/panels?${query()}`, { cache: "no-store" });
    if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
    const d = await res.json();
    const steps = [["pipeline", () => renderPipeline(d.pipeline)], ["alerts", () => renderAlerts(d.alerts)],
      ["sensor", () => renderSensor(d.sensors, d.sensor)], ["locations", () => renderLocations(d.locations)],
      ["alert_counts", () => renderAlertCounts(d.alert_counts)],
      ["quarantine", () => renderQuarantine(d.quarantine)], ["status", () => renderStatus(d.status)],
      ["active", () => renderActive(d.active)]];
    for (const [name, step] of steps) {
      try { step(); } catch (e) { console.error(`panel ${name}`, e); }
    }
    renders += 1;
    document.body.dataset.rendered = String(renders);
    updated.textContent = `updated ${fmtTime(d.generated_at)} UTC · every ${REFRESH_MS / 1000}s`;
  } catch (e) {
    updated.textContent = `cannot reach the dashboard server (${e.message}); retrying`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function bind(id, key) {
  document.getElementById(id).addEventListener("change", (ev) => {
    state[key] = ev.target.value;
    window.history.replaceState(null, "", `?${query()}`);
    refresh();
  });
}

document.getElementById("minutes").value = state.minutes;
bind("minutes", "minutes");
bind("f-type", "type");
bind("f-severity", "severity");
bind("f-location", "location");
bind("f-sensor", "sensor");
refresh();
