// Hash routes: "#/view/arg?key=value", every part encoded with encodeURIComponent.
//
// The entry module (console.js) renders a route and registers itself here, so a view can ask for
// the page to be rendered again (after an admin action, or a refresh) without importing it.

let renderer = () => Promise.resolve();

export function parseHash() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?", 2);
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  return { view: parts[0] || "user", args: parts.slice(1), params };
}

export function routeHref(route, params) {
  const path = route.map(encodeURIComponent).join("/");
  const query = Object.entries(params || {})
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join("&");
  return `#/${path}${query ? `?${query}` : ""}`;
}

/** The function that renders the current route; set once by console.js. */
export function setRenderer(render) {
  renderer = render;
}

/** Render the current route again; resolves when it is on screen. */
export function rerender() {
  return renderer();
}
