// The retrieval console: four views over the service's own read-only API.
//
// Every string that comes from the API (ids, titles, queries, reasons) reaches the page as a
// text node or through setAttribute on an attribute that cannot run code; no HTML is ever built
// from data. Links are hash routes built with encodeURIComponent. The admin token lives in this
// tab's sessionStorage only and is sent only to /v1/admin/*.
"use strict";

(() => {
  const TOKEN_KEY = "nsp-console-admin-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SESSIONS_SHOWN = 20;
  const NEIGHBOURS_SHOWN = 20;
  const CODES_SHOWN = 15;
  const VIEWS = { user: userView, item: itemView, bundle: bundleView, latency: latencyView };
  // Attributes el() may set; none of them can carry script (no on*, no style, no src).
  const SAFE_ATTRIBUTES = new Set([
    "class", "id", "type", "name", "value", "placeholder", "min", "max", "step", "title",
    "for", "colspan", "autocomplete", "selected", "required", "disabled",
  ]);
  let renderCount = 0;

  // ---- DOM ---------------------------------------------------------------------------------

  /** An element with attributes (allow-listed) and children (nodes, or strings as text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (SAFE_ATTRIBUTES.has(name) || name.startsWith("data-")) {
        node.setAttribute(name, value === true ? "" : String(value));
      } else {
        throw new Error(`el(): attribute ${name} is not allowed`);
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A link to a console route; every part is encoded here. */
  function link(route, params, ...children) {
    const a = el("a", {}, ...children);
    a.setAttribute("href", routeHref(route, params));
    return a;
  }

  function routeHref(route, params) {
    const path = route.map(encodeURIComponent).join("/");
    const query = Object.entries(params || {})
      .filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join("&");
    return `#/${path}${query ? `?${query}` : ""}`;
  }

  function itemLink(itemId, meta) {
    const title = meta && meta.title ? meta.title : itemId;
    return link(["item", itemId], null, title);
  }

  function table(headers, rows, attrs) {
    return el(
      "table", attrs || {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    );
  }

  /** A two-column table of a flat object; nested values as compact JSON. */
  function keyValues(object, attrs) {
    const rows = Object.entries(object || {}).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, show(v))));
    return el("table", Object.assign({ class: "kv" }, attrs || {}), el("tbody", {}, rows));
  }

  function show(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (Number.isInteger(value) || Math.abs(value) >= 100) return String(value);
      return String(Number(value.toPrecision(4))); // 4 significant digits, no trailing zeros
    }
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || ""}`.trim() }, text);
  }

  function section(title, ...children) {
    return el("section", {}, el("h2", {}, title), ...children);
  }

  function failure(error) {
    return el("p", { class: "error", "data-role": "error" }, errorText(error));
  }

  function time(unixSeconds) {
    return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const what = body && typeof body === "object" && "error" in body
        ? `${body.error}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`
        : String(body).slice(0, 300);
      super(`HTTP ${status} ${what}`);
      this.status = status;
      this.body = body;
    }
  }

  function errorText(error) {
    return error instanceof ApiError ? error.message : `request failed: ${error && error.message}`;
  }

  /** Relative paths: the console works under whatever prefix serves /ui. */
  async function api(method, path, body, headers) {
    const init = { method, headers: Object.assign({ accept: "application/json" }, headers || {}) };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = text;
    try {
      data = JSON.parse(text);
    } catch (_) {
      // not JSON (/metrics, or a proxy's error page): keep the text
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ---- routing -----------------------------------------------------------------------------

  function parseHash() {
    const hash = window.location.hash.replace(/^#\/?/, "");
    const [path, query] = hash.split("?", 2);
    const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    return { view: parts[0] || "user", args: parts.slice(1), params };
  }

  async function render() {
    const hash = window.location.hash;
    const route = parseHash();
    const view = VIEWS[route.view] || userView;
    const mine = ++renderCount;
    document.querySelectorAll("nav a").forEach((a) => {
      a.classList.toggle("active", a.getAttribute("data-view") === route.view);
    });
    const main = document.getElementById("view");
    main.setAttribute("data-state", "loading");
    refreshServed();
    let content;
    try {
      content = await view(route);
    } catch (error) {
      content = failure(error);
    }
    if (mine !== renderCount) return; // a later navigation won
    main.replaceChildren(content);
    main.setAttribute("data-view", route.view);
    main.setAttribute("data-hash", hash); // which route is on screen, for tests and screenshots
    main.setAttribute("data-state", "ready");
  }

  async function refreshServed() {
    const target = document.getElementById("served");
    try {
      const summary = await api("GET", "v1/bundle");
      target.replaceChildren(
        document.createTextNode(`serving bundle ${summary.version}`),
        summary.pinned ? badge("pinned", "warn") : "",
      );
    } catch (error) {
      target.replaceChildren(badge(error instanceof ApiError ? `no bundle (${error.status})` : "unreachable", "bad"));
    }
  }

  // ---- user view ---------------------------------------------------------------------------

  const USER_FIELDS = ["user_id", "scene", "query", "k", "exclude_seen", "as_of"];

  function userForm(params) {
    const input = (name, label, attrs) => el(
      "label", {}, label,
      el("input", Object.assign({ name, value: params.get(name) || "", autocomplete: "off" }, attrs)),
    );
    const exclude = params.get("exclude_seen") || "";
    const select = el(
      "select", { name: "exclude_seen" },
      [["", "service default"], ["true", "true"], ["false", "false"]].map(([value, text]) =>
        el("option", { value, selected: value === exclude }, text)),
    );
    const form = el(
      "form", { class: "query", id: "user-form" },
      input("user_id", "user id", { required: true, placeholder: "u-0001" }),
      input("scene", "scene", { placeholder: "default" }),
      input("query", "query", { placeholder: "search text (optional)" }),
      input("k", "k", { type: "number", min: 1, max: 1000, placeholder: "20" }),
      el("label", {}, "exclude_seen", select),
      input("as_of", "as_of (unix s)", { type: "number", min: 1, placeholder: "now" }),
      el("button", { type: "submit" }, "Recall"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const next = {};
      for (const name of USER_FIELDS) next[name] = (data.get(name) || "").trim();
      window.location.hash = routeHref(["user"], next);
    });
    return form;
  }

  function recallBody(params, channels) {
    const body = { user_id: params.get("user_id"), include: ["meta"] };
    body.k = params.get("k") ? Number(params.get("k")) : 20;
    if (params.get("scene")) body.scene = params.get("scene");
    if (params.get("query")) body.query = params.get("query");
    if (params.get("exclude_seen")) body.exclude_seen = params.get("exclude_seen") === "true";
    if (params.get("as_of")) body.as_of = Number(params.get("as_of"));
    if (channels) body.channels = channels;
    return body;
  }

  async function userView(route) {
    const params = route.params;
    const page = el("div", { class: "page" }, el("h1", {}, "User"), userForm(params));
    const userId = params.get("user_id");
    if (!userId) {
      append(page, [el("p", { class: "muted" }, "Enter a user id to see their sessions and every channel's answer.")]);
      return page;
    }
    const path = `v1/users/${encodeURIComponent(userId)}/sessions?limit=${SESSIONS_SHOWN}&include=meta`;
    const [sessions, merged] = await Promise.allSettled([
      api("GET", path),
      api("POST", "v1/recall", recallBody(params)),
    ]);
    const seen = new Set();
    if (sessions.status === "fulfilled") {
      for (const s of sessions.value.sessions) for (const item of s.items) seen.add(item.item_id);
    }
    append(page, [otherViews(params, sessions)]);
    const recall = merged.status === "fulfilled"
      ? await recallSection(params, merged.value, seen)
      : section("Recall", failure(merged.reason));
    // Side by side on a wide screen: what the user did, next to what they get.
    append(page, [el("div", { class: "user-layout" }, recall, sessionsSection(sessions, params))]);
    return page;
  }

  /** Links to this user's view for the scenes and queries of their own sessions. */
  function otherViews(params, sessions) {
    if (sessions.status !== "fulfilled") return null;
    const scenes = new Set();
    const queries = new Map(); // query → the scene it was searched in
    for (const s of sessions.value.sessions) {
      scenes.add(s.scene);
      if (s.query && !queries.has(s.query)) queries.set(s.query, s.scene);
    }
    const base = Object.fromEntries(USER_FIELDS.map((f) => [f, params.get(f)]));
    const links = [];
    for (const scene of scenes) {
      links.push(link(["user"], Object.assign({}, base, { scene, query: "" }), `scene ${scene}`));
    }
    for (const [query, scene] of [...queries].slice(0, 8)) {
      links.push(link(["user"], Object.assign({}, base, { scene, query }), `search “${query}”`));
    }
    if (params.get("query") || params.get("scene")) {
      links.push(link(["user"], Object.assign({}, base, { scene: "", query: "" }), "no scene, no query"));
    }
    return el("p", { class: "links" }, "Same user, another request: ", links.flatMap((a, i) => (i ? [" · ", a] : [a])));
  }

  async function recallSection(params, merged, seen) {
    const mergedRank = new Map(merged.items.map((item, i) => [item.item_id, i + 1]));
    const facts = [
      `bundle ${merged.bundle_version}`, `source ${merged.source}`, `scenario ${merged.scenario}`,
    ];
    const summary = el(
      "p", { class: "facts", "data-role": "recall-summary" }, facts.join(" · "),
      merged.degraded ? [" ", badge("degraded", "bad")] : null,
      merged.missing_channels.length ? [" ", badge(`missing: ${merged.missing_channels.join(", ")}`, "bad")] : null,
    );
    const lists = el("div", { class: "lists" }, recallCard("merged", "merged", merged, seen, null));
    const answers = await Promise.allSettled(
      merged.answered_channels.map((name) => api("POST", "v1/recall", recallBody(params, [name]))),
    );
    merged.answered_channels.forEach((name, i) => {
      const answer = answers[i];
      append(lists, [answer.status === "fulfilled"
        ? recallCard(`channel:${name}`, name, answer.value, seen, mergedRank)
        : el("div", { class: "card", "data-list": `channel:${name}` }, el("h3", {}, name), failure(answer.reason))]);
    });
    const note = merged.answered_channels.length
      ? "Merged: the fused score and the channels that proposed each item (with their ranks). Each "
        + "channel's list is a recall with only that channel, with the channel's own score and the item's "
        + "merged rank."
      : "No channel answered (a fallback or cached answer): no per-channel lists.";
    return section("Recall", summary, el("p", { class: "muted" }, note, " ", badge("seen", "seen"),
      " marks items in the sessions below."), lists);
  }

  /** One list: merged (with each item's agreeing channels) or one channel's (with its merged rank). */
  function recallCard(listId, title, answer, seen, mergedRank) {
    const isMerged = mergedRank === null;
    const rows = answer.items.map((item, i) => {
      // A channel's list shows the channel's own score; padding from popularity has none.
      const hit = isMerged ? null : item.channels[title];
      const score = isMerged ? item.score.toFixed(3) : hit ? hit.score.toFixed(3) : el("span", { class: "muted" }, "padding");
      const cells = [
        el("td", { class: "num" }, String(i + 1)),
        el("td", {}, itemLink(item.item_id, item.meta), item.meta ? el("div", { class: "sub" }, item.item_id) : null,
          seen.has(item.item_id) ? [" ", badge("seen", "seen")] : null),
        el("td", { class: "num" }, score),
      ];
      if (isMerged) {
        const agree = Object.entries(item.channels).map(([name, hit]) => badge(`${name} #${hit.rank}`, "channel"));
        cells.push(el("td", {}, agree.length ? agree : el("span", { class: "muted" }, "padding")));
      } else {
        const rank = mergedRank.get(item.item_id);
        cells.push(el("td", { class: "num" }, rank ? `#${rank}` : "—"));
      }
      return el("tr", { "data-item-id": item.item_id, class: seen.has(item.item_id) ? "seen" : null }, cells);
    });
    const headers = isMerged ? ["#", "item", "score", "channels"] : ["#", "item", "score", "merged"];
    const source = answer.source === "model" ? null : badge(answer.source, "warn");
    return el(
      "div", { class: "card", "data-list": listId },
      el("h3", {}, title, " ", el("span", { class: "muted" }, `${answer.items.length} items`), source ? [" ", source] : null),
      table(headers, rows, { class: "recall" }),
    );
  }

  function sessionsSection(sessions, params) {
    if (sessions.status !== "fulfilled") return section("Sessions", failure(sessions.reason));
    const list = sessions.value.sessions;
    const asOf = params.get("as_of") ? Number(params.get("as_of")) : null;
    const blocks = list.map((s) => {
      const later = asOf !== null && s.ts >= asOf;
      const rows = s.items.map((item) => el(
        "tr", { "data-item-id": item.item_id },
        el("td", {}, itemLink(item.item_id, item.meta), item.meta ? el("div", { class: "sub" }, item.item_id) : null),
        el("td", {}, item.meta ? item.meta.category : "—"),
        el("td", {}, badge(item.action, `action-${item.action}`)),
      ));
      return el(
        "div", { class: later ? "session later" : "session", "data-request-id": s.request_id },
        el("div", { class: "session-head" },
          el("span", { class: "when" }, time(s.ts)), " ", badge(s.scene, "scene"),
          s.query ? [" ", el("span", { class: "query" }, `“${s.query}”`)] : null,
          later ? [" ", badge("after as_of: not used", "warn")] : null,
          el("span", { class: "sub" }, ` request ${s.request_id}`)),
        table(["item", "category", "action"], rows, { class: "session-items" }),
      );
    });
    const body = blocks.length ? blocks : el("p", { class: "muted" }, "No stored events for this user.");
    return el("section", { "data-role": "sessions" },
      el("h2", {}, `Sessions `, el("span", { class: "muted" }, `(newest first, last ${SESSIONS_SHOWN})`)), body);
  }

  // ---- item view ---------------------------------------------------------------------------

  async function itemView(route) {
    const itemId = route.args.join("/") || route.params.get("item_id") || "";
    const form = el("form", { class: "query" },
      el("label", {}, "item id", el("input", { name: "item_id", value: itemId, required: true, autocomplete: "off" })),
      el("button", { type: "submit" }, "Show"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = (new FormData(form).get("item_id") || "").trim();
      if (next) window.location.hash = routeHref(["item", next]);
    });
    const page = el("div", { class: "page" }, el("h1", {}, "Item"), form);
    if (!itemId) return page;
    const item = await api("GET", `v1/items/${encodeURIComponent(itemId)}?neighbours=${NEIGHBOURS_SHOWN}`);
    const meta = item.meta;
    const facts = keyValues({
      item_id: item.item_id,
      category: meta ? meta.category : null,
      price: meta && meta.price !== null ? String(meta.price) : null,
      bundle: item.bundle_version,
    }, { "data-role": "item-facts" });
    const attributes = meta && Object.keys(meta.attributes).length
      ? keyValues(meta.attributes) : el("p", { class: "muted" }, "None in the bundle's catalog.");
    const neighbours = item.neighbours.map((n, i) => el(
      "tr", { "data-item-id": n.item_id },
      el("td", { class: "num" }, String(i + 1)),
      el("td", {}, itemLink(n.item_id, n.meta), n.meta ? el("div", { class: "sub" }, n.item_id) : null),
      el("td", {}, n.meta ? n.meta.category : "—"),
      el("td", { class: "num" }, n.weight.toFixed(3)),
    ));
    const sid = item.sid
      ? el("p", { class: "sid" }, item.sid.join(" · ")) : el("p", { class: "muted" }, "The bundle has no sid channel.");
    const codes = item.codes
      ? [table(["code", "granularity", "log p"], item.codes.slice(0, CODES_SHOWN).map((c) => el(
        "tr", {}, el("td", {}, c.code), el("td", {}, c.granularity), el("td", { class: "num" }, c.logprob.toFixed(3))))),
      item.codes.length > CODES_SHOWN
        ? el("p", { class: "muted" }, `and ${item.codes.length - CODES_SHOWN} less likely codes`) : null]
      : el("p", { class: "muted" }, "The bundle has no gram channel.");
    append(page, [
      el("h2", { class: "title", "data-role": "item-title" }, meta && meta.title ? meta.title : item.item_id),
      el("div", { class: "columns" }, section("Item", facts), section("Attributes", attributes)),
      el("div", { class: "columns" },
        section("Item-to-item neighbours", neighbours.length
          ? table(["#", "item", "category", "weight"], neighbours, { "data-role": "neighbours" })
          : el("p", { class: "muted" }, "None: the bundle has no i2i table, or the item no co-occurrences.")),
        el("div", {}, section("Semantic ID", sid), section("Text codes (likeliest first)", codes))),
    ]);
    return page;
  }

  // ---- bundle view -------------------------------------------------------------------------

  async function bundleView() {
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
        await render();
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

  // ---- latency view ------------------------------------------------------------------------

  const QUANTILES = [0.5, 0.9, 0.99];

  /** Histograms in Prometheus text: name → [{labels, buckets: [[le, cumulative]], count, sum}]. */
  function parseHistograms(text) {
    const series = new Map();
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    for (const raw of text.split("\n")) {
      if (!raw || raw.startsWith("#")) continue;
      const m = line.exec(raw);
      if (!m) continue;
      const [, name, labelText, valueText] = m;
      const suffix = ["_bucket", "_count", "_sum"].find((s) => name.endsWith(s));
      if (!suffix) continue;
      const labels = {};
      for (const lm of (labelText || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      const base = name.slice(0, -suffix.length);
      const le = labels.le;
      delete labels.le;
      const key = `${base}|${JSON.stringify(Object.entries(labels).sort())}`;
      if (!series.has(key)) series.set(key, { name: base, labels, buckets: [], count: 0, sum: 0 });
      const s = series.get(key);
      const value = Number(valueText);
      if (suffix === "_bucket") s.buckets.push([le === "+Inf" ? Infinity : Number(le), value]);
      else if (suffix === "_count") s.count = value;
      else s.sum = value;
    }
    const byName = new Map();
    for (const s of series.values()) {
      if (!s.buckets.length) continue;
      s.buckets.sort((a, b) => a[0] - b[0]);
      if (!byName.has(s.name)) byName.set(s.name, []);
      byName.get(s.name).push(s);
    }
    return byName;
  }

  /** Prometheus's histogram_quantile: linear inside the bucket; the highest finite bound above it. */
  function quantile(q, buckets) {
    const total = buckets[buckets.length - 1][1];
    if (!total) return null;
    const rank = q * total;
    for (let i = 0; i < buckets.length; i++) {
      const [upper, cumulative] = buckets[i];
      if (cumulative < rank) continue;
      if (upper === Infinity) return i > 0 ? buckets[i - 1][0] : null;
      const lower = i > 0 ? buckets[i - 1][0] : 0;
      const below = i > 0 ? buckets[i - 1][1] : 0;
      const inBucket = cumulative - below;
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    return null;
  }

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

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const c of children) node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
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

  async function latencyView() {
    const text = await api("GET", "metrics", undefined, { accept: "text/plain" });
    const histograms = parseHistograms(typeof text === "string" ? text : "");
    const stages = latencyRows(histograms.get("nsp_recall_stage_duration_seconds"), (s) => s.labels.stage);
    const channels = latencyRows(histograms.get("nsp_channel_duration_seconds"), (s) => s.labels.channel);
    const requests = latencyRows(
      histograms.get("nsp_request_duration_seconds"),
      (s) => (s.labels.route && s.labels.route.startsWith("/v1/") && s.labels.outcome === "2xx" ? s.labels.route : null),
    ).sort((a, b) => b.count - a.count);
    const refresh = el("button", { type: "button", "data-action": "refresh" }, "Refresh");
    refresh.addEventListener("click", () => render());
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

  window.addEventListener("hashchange", render);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
  else render();
})();
