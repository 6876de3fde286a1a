// The console's only way to the server: the public /api/ routes with the user's own credential.
// A JWT pair (email + password) is refreshed once when the access token is refused; an API key is sent as is.
// The credential lives in sessionStorage (this tab only), never in a cookie.

const STORE = "segops.credential";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.code;
  }
}

let credential = JSON.parse(sessionStorage.getItem(STORE) || "null");
const listeners = new Set();

function save(next) {
  credential = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  listeners.forEach((fn) => fn(next));
}

export const onCredentialChange = (fn) => (listeners.add(fn), () => listeners.delete(fn));
export const currentCredential = () => credential;

function authHeader() {
  if (!credential) return {};
  return credential.kind === "key" ? { Authorization: `ApiKey ${credential.key}` }
    : { Authorization: `Bearer ${credential.access}` };
}

async function send(method, path, body) {
  const headers = { ...authHeader() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (response.status === 204) return null;
  return type.includes("json") ? response.json() : response.text();
}

let refreshing = null;
async function refresh() {
  refreshing = refreshing || (async () => {
    const r = await fetch("/api/auth/token/refresh/", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: credential.refresh }) });
    if (!r.ok) { save(null); return false; }
    const pair = await r.json();
    save({ ...credential, access: pair.access, refresh: pair.refresh || credential.refresh });
    return true;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

export async function api(method, path, body) {
  let response = await send(method, path, body);
  if (response.status === 401 && credential && credential.kind === "jwt" && await refresh()) {
    response = await send(method, path, body);
  }
  const data = await parse(response);
  if (!response.ok) {
    if (response.status === 401) save(null);
    throw new ApiError(response.status, typeof data === "object" ? data : { detail: data });
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);

export async function signInWithPassword(email, password) {
  const r = await fetch("/api/auth/token/", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }) });
  const data = await parse(r);
  if (!r.ok) throw new ApiError(r.status, data);
  save({ kind: "jwt", access: data.access, refresh: data.refresh });
  return whoAmI();
}

export async function signInWithKey(key) {
  save({ kind: "key", key: key.trim() });
  try {
    return await whoAmI();
  } catch (err) {
    save(null);
    throw err;
  }
}

export const whoAmI = () => get("/api/auth/me/");
export const signOut = () => save(null);

/** Download a file the API serves behind the credential (a plain link could not send the header). */
export async function download(path, filename) {
  let response = await send("GET", path);
  if (response.status === 401 && credential && credential.kind === "jwt" && await refresh()) {
    response = await send("GET", path);
  }
  if (!response.ok) throw new ApiError(response.status, await parse(response));
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export const qs = (params) => {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
};
