// The latency view: percentiles from the service's own /metrics histograms, as tables and bar charts.

import { api } from "./api.js";
import { el, section, svg, table } from "./dom.js";
import { parseHistograms, QUANTILES, quantile } from "./metrics.js";
import { rerender } from "./route.js";

function latencyRows(list, labelOf) {
  return (list || [])
    .map((s) => ({
      label: labelOf(s), count: s.buckets[s.buckets.length - 1][1],
      mean: s.count ? s.sum / s.count : null, values: QUANTILES.map((q) => quantile(q, s.buckets)),
    }))
    .filter((r) => r.label !== null && r.count > 0);
}

const ms = (seconds) => (seconds === null ? "—" : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`);

function latencyTable(rows, what, role) {
  return table(
    [what, "count", "mean", "p50", "p90", "p99"],
    rows.map((r) => el("tr", { "data-series": r.label },
      el("th", {}, r.label), el("td", { class: "num" }, String(r.count)), el("td", { class: "num" }, ms(r.mean)),
      r.values.map((v) => el("td", { class: "num" }, ms(v))))),
    { "data-role": role, class: "latency" },
  );
}

/** Horizontal bars: per row one bar per quantile, one linear scale per chart. */
function barChart(rows) {
  const longest = Math.max(...rows.map((r) => r.label.length));
  const labelWidth = Math.min(260, Math.max(90, longest * 7 + 12)); // ~7 px a character at 11 px
  const barArea = 420;
  const bar = 9;
  const rowHeight = QUANTILES.length * (bar + 2) + 10;
  const height = rows.length * rowHeight + 30;
  const top = Math.max(...rows.flatMap((r) => r.values.filter((v) => v !== null)), 1e-6);
  const chart = svg("svg", {
    class: "chart", width: labelWidth + barArea + 90, height, role: "img",
    viewBox: `0 0 ${labelWidth + barArea + 90} ${height}`,
  });
  rows.forEach((r, i) => {
    const y0 = i * rowHeight + 4;
    chart.appendChild(svg("text", { x: labelWidth - 8, y: y0 + rowHeight / 2, class: "label", "text-anchor": "end" }, r.label));
    r.values.forEach((v, j) => {
      const y = y0 + j * (bar + 2);
      const w = v === null ? 0 : Math.max(1, (v / top) * barArea);
      chart.appendChild(svg("rect", { x: labelWidth, y, width: w, height: bar, class: `bar q${j}` }));
      chart.appendChild(svg("text", { x: labelWidth + w + 4, y: y + bar - 1, class: "value" }, ms(v)));
    });
  });
  const legendY = rows.length * rowHeight + 18;
  QUANTILES.forEach((q, j) => {
    const x = labelWidth + j * 80;
    chart.appendChild(svg("rect", { x, y: legendY - 9, width: 10, height: 10, class: `bar q${j}` }));
    chart.appendChild(svg("text", { x: x + 14, y: legendY, class: "value" }, `p${Math.round(q * 100)}`));
  });
  return chart;
}

export async function latencyView() {
  const text = await api("GET", "metrics", undefined, { accept: "text/plain" });
  const histograms = parseHistograms(typeof text === "string" ? text : "");
  const stages = latencyRows(histograms.get("nsp_recall_stage_duration_seconds"), (s) => s.labels.stage);
  const channels = latencyRows(histograms.get("nsp_channel_duration_seconds"), (s) => s.labels.channel);
  const requests = latencyRows(
    histograms.get("nsp_request_duration_seconds"),
    (s) => (s.labels.route && s.labels.route.startsWith("/v1/") && s.labels.outcome === "2xx" ? s.labels.route : null),
  ).sort((a, b) => b.count - a.count);
  const refresh = el("button", { type: "button", "data-action": "refresh" }, "Refresh");
  refresh.addEventListener("click", () => rerender());
  const part = (title, rows, what, role) => section(title, rows.length
    ? el("div", { class: "chart-row" }, latencyTable(rows, what, role), barChart(rows))
    : el("p", { class: "muted" }, "No observations yet."));
  return el("div", { class: "page" },
    el("h1", {}, "Latency ", refresh),
    el("p", { class: "muted" },
      "Percentiles since this process started, estimated from the service's own /metrics histogram "
      + "buckets the way Prometheus's histogram_quantile does (linear within a bucket)."),
    part("Requests (2xx)", requests, "route", "latency-requests"),
    part("Recall stages", stages, "stage", "latency-stages"),
    part("Channels", channels, "channel", "latency-channels"));
}
