// Element builders.
//
// Every string that comes from the API (ids, titles, queries, reasons) reaches the page as a
// text node or through setAttribute on an attribute that cannot run code; no HTML is ever built
// from data. Links are hash routes built with encodeURIComponent.

import { errorText } from "./api.js";
import { routeHref } from "./route.js";

const SVG_NS = "http://www.w3.org/2000/svg";
// Attributes el() may set; none of them can carry script (no on*, no style, no src).
const SAFE_ATTRIBUTES = new Set([
  "class", "id", "type", "name", "value", "placeholder", "min", "max", "step", "title",
  "for", "colspan", "autocomplete", "selected", "required", "disabled",
]);

/** An element with attributes (allow-listed) and children (nodes, or strings as text). */
export function el(tag, attrs, ...children) {
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

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A link to a console route; every part is encoded here. */
export function link(route, params, ...children) {
  const a = el("a", {}, ...children);
  a.setAttribute("href", routeHref(route, params));
  return a;
}

export function itemLink(itemId, meta) {
  const title = meta && meta.title ? meta.title : itemId;
  return link(["item", itemId], null, title);
}

export function table(headers, rows, attrs) {
  return el(
    "table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

/** A two-column table of a flat object; nested values as compact JSON. */
export function keyValues(object, attrs) {
  const rows = Object.entries(object || {}).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, show(v))));
  return el("table", Object.assign({ class: "kv" }, attrs || {}), el("tbody", {}, rows));
}

export function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (Number.isInteger(value) || Math.abs(value) >= 100) return String(value);
    return String(Number(value.toPrecision(4))); // 4 significant digits, no trailing zeros
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function badge(text, kind) {
  return el("span", { class: `badge ${kind || ""}`.trim() }, text);
}

export function section(title, ...children) {
  return el("section", {}, el("h2", {}, title), ...children);
}

export function failure(error) {
  return el("p", { class: "error", "data-role": "error" }, errorText(error));
}

export function time(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** An SVG element (charts): attributes are the caller's own numbers and names, text as text. */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
