// The service's API from the browser: one fetch helper and the error every view shows.
//
// Paths are relative, so the console works under whatever prefix serves /ui (a module's fetch
// resolves against the page, not the module). The admin token is passed in by the caller and sent
// only with the /v1/admin/* requests that ask for it.

export class ApiError extends Error {
  constructor(status, body) {
    const what = body && typeof body === "object" && "error" in body
      ? `${body.error}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`
      : String(body).slice(0, 300);
    super(`HTTP ${status} ${what}`);
    this.status = status;
    this.body = body;
  }
}

export function errorText(error) {
  return error instanceof ApiError ? error.message : `request failed: ${error && error.message}`;
}

/** Relative paths: the console works under whatever prefix serves /ui. */
export async function api(method, path, body, headers) {
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
