// The retrieval console: four views over the service's own read-only API.
//
// The entry module: it routes the hash to a view, marks the navigation and the served bundle, and
// renders. Every view builds its page with dom.js, which puts data into the page as text only.

import { ApiError, api } from "./api.js";
import { badge, failure } from "./dom.js";
import { bundleView } from "./bundle.js";
import { itemView } from "./item.js";
import { latencyView } from "./latency.js";
import { parseHash, setRenderer } from "./route.js";
import { userView } from "./user.js";

const VIEWS = { user: userView, item: itemView, bundle: bundleView, latency: latencyView };
let renderCount = 0;

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

setRenderer(render);
window.addEventListener("hashchange", render);
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
else render();
