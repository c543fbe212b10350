// Calls to the server: the API key, errors in the server's words, JSON in and out.

export const BASE = location.pathname.replace(/\/ui\/?$/, "");
// The API key, for a server with authentication on; kept in this browser only.
export const API_KEY = "streamforge.apiKey";

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const UNREACHABLE = "The server cannot be reached. Check that it is running and try again.";
export const NEEDS_KEY = "This server needs an API key: enter yours under \u201cAPI key\u201d.";

export function apiKey() {
  try {
    return localStorage.getItem(API_KEY) || "";
  } catch {
    return "";
  }
}

// Request headers with the API key, when there is one.
export function withKey(headers) {
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

export async function errorFrom(response) {
  if (response.status === 401) return new ApiError(NEEDS_KEY, 401, "unauthorized");
  let message = `The server answered ${response.status} ${response.statusText}`.trim() + ".";
  let code = "http_error";
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      message = body.error.message;
      code = body.error.code || code;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(message, response.status, code);
}

export async function api(method, path, body) {
  const init = { method, headers: withKey({ Accept: "application/json" }) };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch {
    throw new ApiError(UNREACHABLE, 0, "network");
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

// Every message of a session, page after page.
export async function allMessages(sessionId) {
  const items = [];
  for (;;) {
    const page = await api(
      "GET",
      `/sessions/${encodeURIComponent(sessionId)}/messages?limit=100&offset=${items.length}`,
    );
    items.push(...page.items);
    if (!page.items.length || items.length >= page.total) return items;
  }
}
