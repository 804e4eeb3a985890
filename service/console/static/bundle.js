// The bundle view: the served bundle's manifest, the versions on disk, recent swaps, and the
// admin actions (reload, roll back, pin, unpin).
//
// The admin token lives in this tab's sessionStorage only and is sent only to /v1/admin/*.

import { api, errorText } from "./api.js";
import { append, badge, el, failure, keyValues, section, show, table, time } from "./dom.js";
import { rerender } from "./route.js";

const TOKEN_KEY = "nsp-console-admin-token";

export async function bundleView() {
  const [summary, state] = await Promise.allSettled([api("GET", "v1/bundle"), api("GET", "v1/bundles")]);
  const page = el("div", { class: "page" }, el("h1", {}, "Bundle"));
  const result = el("p", { class: "admin-result", "data-role": "admin-result" });
  // What an operator acts on first (what is served, the buttons, versions, swaps), then the manifest.
  const top = el("div", { class: "columns" },
    summary.status === "fulfilled" ? servedSection(summary.value) : section("Served bundle", failure(summary.reason)),
    adminSection(result, state));
  append(page, [top]);
  if (state.status === "fulfilled") {
    append(page, [el("div", { class: "columns" }, versionsSection(state.value, result), swapsSection(state.value))]);
  } else {
    append(page, [section("Versions on disk", failure(state.reason))]);
  }
  if (summary.status === "fulfilled") append(page, manifestSections(summary.value));
  return page;
}

function servedSection(m) {
  return section("Served bundle", el(
    "div", { "data-role": "served" },
    el("p", { class: "big" }, `version ${m.version} `,
      m.pinned ? badge("pinned", "warn") : badge("newest wins", "ok")),
    keyValues({
      parent_version: m.parent_version, created_at: m.created_at, item_count: m.item_count,
      embedding_dim: m.embedding_dim, query_pieces: m.query_pieces,
    }),
  ));
}

function manifestSections(m) {
  const training = Object.fromEntries(Object.entries(m.training || {}).map(([k, v]) =>
    [k, k.endsWith("_ts") && typeof v === "number" ? `${v} (${time(v)})` : v]));
  const channels = m.channels || {};
  const sections = [el("div", { class: "columns" },
    section("Training window", keyValues(training)),
    section("ANN index (nsp)", keyValues(m.hnsw)))];
  if (channels.fusion && typeof channels.fusion === "object") {
    sections.push(section("Fusion weights", fusionTable(channels.fusion)));
  }
  sections.push(section("Validation metrics", gridTable(m.metrics || {})));
  if (channels.validation && typeof channels.validation === "object") {
    sections.push(section("Fusion choices on validation", gridTable(channels.validation)));
  }
  const rest = Object.fromEntries(Object.entries(channels).filter(([k]) => k !== "fusion" && k !== "validation"));
  if (Object.keys(rest).length) sections.push(section("Channel settings", keyValues(rest)));
  if (m.text) sections.push(section("Text channels", keyValues(m.text)));
  return sections;
}

/** "row.column" keys as a grid (metrics: "val_merged.hr@20"); a flat table when that fails. */
function gridTable(values) {
  const rows = new Map();
  const columns = [];
  for (const [key, value] of Object.entries(values)) {
    const dot = key.lastIndexOf(".");
    const [row, column] = dot > 0 ? [key.slice(0, dot), key.slice(dot + 1)] : ["", key];
    if (!rows.has(row)) rows.set(row, {});
    rows.get(row)[column] = value;
    if (!columns.includes(column)) columns.push(column);
  }
  if (columns.length > 12 || rows.size < 2) return keyValues(values);
  return table(["", ...columns], [...rows].map(([name, row]) => el(
    "tr", {}, el("th", {}, name), columns.map((c) => el("td", { class: "num" }, c in row ? show(row[c]) : "")))),
  { class: "grid" });
}

/** Fusion weights: a row per scenario, a column per channel, then the method. */
function fusionTable(fusion) {
  const scenarios = Object.entries(fusion).map(([name, f]) => [name, f && typeof f === "object" ? f : {}]);
  const channels = [];
  for (const [, f] of scenarios) {
    for (const name of Object.keys(f.weights || {})) if (!channels.includes(name)) channels.push(name);
  }
  if (!channels.length) return keyValues(fusion);
  const settings = [];
  for (const [, f] of scenarios) {
    for (const name of Object.keys(f)) if (name !== "weights" && !settings.includes(name)) settings.push(name);
  }
  const rows = scenarios.map(([scenario, f]) => el(
    "tr", {}, el("th", {}, scenario),
    channels.map((n) => el("td", { class: "num" }, show((f.weights || {})[n]))),
    settings.map((n) => el("td", { class: "num" }, show(f[n])))));
  return table(["scenario", ...channels, ...settings], rows, { class: "fusion" });
}

function adminSection(result, state) {
  const token = el("input", {
    type: "password", name: "admin-token", autocomplete: "off", placeholder: "NSP_ADMIN_TOKEN",
    value: sessionStorage.getItem(TOKEN_KEY) || "",
  });
  token.addEventListener("input", () => {
    if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  const pinned = state.status === "fulfilled" && state.value.pinned;
  const buttons = el("div", { class: "buttons" },
    adminButton("reload", "Reload now", "POST", "v1/admin/reload", undefined, result),
    adminButton("rollback", "Roll back", "POST", "v1/admin/rollback", undefined, result),
    adminButton("unpin", "Unpin", "DELETE", "v1/admin/pin", undefined, result, !pinned));
  return section("Admin",
    el("p", { class: "muted" },
      "Actions need the service's admin token; it is kept in this tab's session storage only. "
      + "Each acts on the instance serving this page."),
    el("label", { class: "token" }, "admin token ", token), buttons, result);
}

function adminButton(action, label, method, path, body, result, disabled) {
  const button = el("button", { type: "button", "data-action": action, disabled: Boolean(disabled) }, label);
  button.addEventListener("click", async () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    result.className = "admin-result pending";
    result.replaceChildren(`${label}…`);
    try {
      const state = await api(method, path, body, headers);
      const version = state.version === null ? "none" : state.version;
      await rerender();
      const fresh = document.querySelector("[data-role=admin-result]");
      if (fresh) {
        fresh.className = "admin-result ok";
        fresh.setAttribute("data-done", action);
        fresh.replaceChildren(`${label}: done, serving bundle ${version}${state.pinned ? " (pinned)" : ""}.`);
      }
    } catch (error) {
      result.className = "admin-result error";
      result.setAttribute("data-done", action);
      result.replaceChildren(`${label} failed: ${errorText(error)}`);
    }
  });
  return button;
}

function versionsSection(state, result) {
  const failed = new Map(state.failed.map((f) => [f.version, f]));
  const rows = [...state.versions].reverse().map((v) => {
    const marks = [];
    if (v === state.version) marks.push(badge("served", "ok"));
    if (v === state.version && state.pinned) marks.push(badge("pinned", "warn"));
    if (v === state.previous_version) marks.push(badge("previous", ""));
    const f = failed.get(v);
    if (f) marks.push(badge(`failed ×${f.attempts}`, "bad"));
    return el("tr", { "data-version": v },
      el("td", { class: "num" }, String(v)), el("td", {}, marks),
      el("td", {}, adminButton(`pin-${v}`, `Pin ${v}`, "PUT", "v1/admin/pin", { version: v }, result)));
  });
  const gone = state.failed.filter((f) => !state.versions.includes(f.version)).map((f) => el(
    "tr", { "data-version": f.version },
    el("td", { class: "num" }, String(f.version)), el("td", {}, badge(`failed ×${f.attempts}`, "bad")), el("td", {})));
  return section("Versions on disk",
    el("p", { class: "facts", "data-role": "pin-state" },
      state.pinned ? `pinned to ${state.version}` : "not pinned: the newest loadable version is served"),
    table(["version", "state", ""], [...rows, ...gone], { "data-role": "versions" }));
}

function swapsSection(state) {
  const swaps = state.swaps || [];
  const rows = swaps.map((s) => el(
    "tr", { class: s.outcome === "failed" ? "failed" : null },
    el("td", {}, time(s.at)), el("td", {}, s.trigger),
    el("td", { class: "num" }, show(s.previous_version)), el("td", { class: "num" }, String(s.version)),
    el("td", {}, badge(s.outcome, s.outcome === "failed" ? "bad" : "ok")), el("td", { class: "reason" }, s.reason || ""),
  ));
  return section("Recent swaps",
    rows.length
      ? table(["at (UTC)", "trigger", "from", "to", "outcome", "reason"], rows, { "data-role": "swaps" })
      : el("p", { class: "muted" }, "None recorded yet."));
}
