// The item view: an item's metadata, its i2i neighbours, semantic ID and text codes.

import { api } from "./api.js";
import { append, el, itemLink, keyValues, section, table } from "./dom.js";
import { routeHref } from "./route.js";

const NEIGHBOURS_SHOWN = 20;
const CODES_SHOWN = 15;

export async function itemView(route) {
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
