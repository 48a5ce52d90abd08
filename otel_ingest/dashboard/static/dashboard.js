// The usage dashboard: reads /api/summary with the filters in the URL and draws it.
"use strict";

const form = document.getElementById("filters");
const charts = {};
const palette = ["#3563c9", "#e0823d", "#3aa675", "#c94a4a", "#8a5cc9", "#c9a23a", "#4ab0c9", "#777"];

function params() {
  const query = new URLSearchParams();
  for (const element of form.elements) {
    if (element.name && element.value) query.append(element.name, element.value);
  }
  return query;
}

function formatNumber(key, value) {
  if (value === null || value === undefined) return "–";
  if (key === "cost_usd") return "$" + value.toFixed(4);
  if (key.endsWith("_rate") || key === "cache_hit_ratio") return (value * 100).toFixed(1) + "%";
  if (key.endsWith("_ms")) return value.toFixed(0) + " ms";
  if (typeof value === "number") return value.toLocaleString("en-US");
  return String(value);
}

function fillSelect(name, values) {
  const select = form.elements[name];
  const current = select.value;
  select.replaceChildren(new Option("all", ""), ...values.map((v) => new Option(v, v)));
  select.value = values.includes(current) ? current : "";
}

function fillTable(table, rows) {
  const columns = table.dataset.columns.split(",");
  const head = document.createElement("tr");
  for (const column of columns) {
    const th = document.createElement("th");
    th.textContent = column.replaceAll("_", " ");
    head.append(th);
  }
  const body = rows.map((row) => {
    const tr = document.createElement("tr");
    for (const column of columns) {
      const td = document.createElement("td");
      const value = row[column];
      td.textContent = formatNumber(column, value);
      if (typeof value === "number") td.className = "num";
      td.dataset.column = column;
      tr.append(td);
    }
    return tr;
  });
  table.replaceChildren(head, ...body);
}

function drawStacked(id, rows, field) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const stacks = [...new Set(rows.map((r) => r.stack ?? "unknown"))].sort();
  const datasets = stacks.map((stack, i) => ({
    label: stack,
    backgroundColor: palette[i % palette.length],
    data: days.map((day) => {
      const row = rows.find((r) => r.day === day && (r.stack ?? "unknown") === stack);
      return row ? row[field] ?? 0 : 0;
    }),
  }));
  const data = { labels: days, datasets };
  if (charts[id]) {
    charts[id].data = data;
    charts[id].update();
    return;
  }
  charts[id] = new Chart(document.getElementById(id), {
    type: "bar",
    data,
    options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true } } },
  });
}

function drawTypes(rows) {
  const data = {
    labels: rows.map((r) => r.type),
    datasets: [{ data: rows.map((r) => r.tokens), backgroundColor: palette }],
  };
  if (charts.types) {
    charts.types.data = data;
    charts.types.update();
    return;
  }
  charts.types = new Chart(document.getElementById("types-chart"), {
    type: "doughnut",
    data,
    options: { animation: false, responsive: true },
  });
}

function setExportLinks() {
  const query = params();
  for (const link of document.querySelectorAll("a.export")) {
    const format = link.dataset.format || "csv";
    const q = new URLSearchParams(query);
    q.set("format", format);
    link.href = `/api/panel/${link.dataset.export}?${q}`;
    link.setAttribute("download", `${link.dataset.export}.${format}`);
  }
}

async function load() {
  const status = document.getElementById("status");
  status.textContent = "loading…";
  history.replaceState(null, "", "?" + params());
  setExportLinks();
  const response = await fetch("/api/summary?" + params(), { credentials: "same-origin" });
  if (response.status === 401) {
    location.href = "/login";
    return;
  }
  if (!response.ok) {
    status.textContent = (await response.json()).error;
    return;
  }
  const body = await response.json();
  for (const element of document.querySelectorAll("[data-total]")) {
    element.textContent = formatNumber(element.dataset.total, body.totals[element.dataset.total]);
    element.dataset.value = body.totals[element.dataset.total] ?? "";
  }
  for (const table of document.querySelectorAll("table[data-table]")) fillTable(table, body[table.dataset.table]);
  for (const [name, values] of Object.entries(body.filters)) fillSelect(name, values);
  drawStacked("cost-chart", body.over_time, "cost_usd");
  drawStacked("tokens-chart", body.over_time, "tokens");
  drawTypes(body.tokens_by_type);
  status.textContent = body.refreshed_at ? "refreshed " + new Date(body.refreshed_at).toLocaleTimeString() : "";
  document.body.dataset.loaded = String(Date.now());
}

function init() {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of query) if (form.elements[key]) {
    const element = form.elements[key];
    if (element.tagName === "SELECT" && ![...element.options].some((o) => o.value === value)) element.add(new Option(value, value));
    element.value = value;
  }
  if (!form.elements.since.value) {
    const since = new Date(Date.now() - 30 * 86400000);
    form.elements.since.value = since.toISOString().slice(0, 10);
  }
  form.addEventListener("change", load);
  load();
}

init();
