// The user view: a recall for a user (merged and each channel's own list) beside their sessions.

import { api } from "./api.js";
import { append, badge, el, failure, itemLink, link, section, table, time } from "./dom.js";
import { routeHref } from "./route.js";

const SESSIONS_SHOWN = 20;
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

export async function userView(route) {
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
