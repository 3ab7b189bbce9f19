// The console's only way to the server: `/v1` on this origin with the key the user signed in
// with. The key lives in this tab's sessionStorage: never in a URL, never sent elsewhere.
const KEY = "warren.key";

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(k) {
  sessionStorage.setItem(KEY, k);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

// Whether the server takes key `k` (asked before it is kept).
export async function check(k) {
  const resp = await fetch("/v1/sandboxes?state=failed", { headers: { Authorization: "Bearer " + k }, cache: "no-store" });
  if (!resp.ok) {
    throw resp.status === 401 ? new ApiError(401, "unauthorized", "That key is not known to this server.") : await failure(resp);
  }
}

// An API error, as every `/v1` route answers one: {"error": {"code", "message"}}.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(resp) {
  let code = "http_" + resp.status;
  let message = resp.statusText || "request failed";
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // Not JSON: the status says it.
  }
  if (resp.status === 401 && key()) {
    window.dispatchEvent(new CustomEvent("warren:unauthorized"));
  }
  return new ApiError(resp.status, code, message);
}

// A call of `/v1${path}`. `json` is sent as the body; `body` as it is. Answers the parsed
// JSON, null for 204, or the Response itself with `raw`.
export async function call(method, path, { json, body, headers = {}, raw, signal } = {}) {
  const h = { ...headers, Authorization: "Bearer " + key() };
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const resp = await fetch("/v1" + path, { method, headers: h, body, signal, cache: "no-store" });
  if (!resp.ok) {
    throw await failure(resp);
  }
  if (raw) {
    return resp;
  }
  if (resp.status === 204) {
    return null;
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

export const get = (path, opts) => call("GET", path, opts);
export const post = (path, json, opts = {}) => call("POST", path, { ...opts, json });
export const del = (path, opts) => call("DELETE", path, opts);

// Server-sent events read with fetch (EventSource cannot send `Authorization`): calls
// `onEvent({event, data, id})` for each; resolves when the stream ends, rejects on an error.
// `onOpen` is called once the stream is open (before its first event).
export async function events(method, path, { json, headers = {}, signal, onEvent, onOpen }) {
  const resp = await call(method, path, {
    json,
    headers: { ...headers, Accept: "text/event-stream" },
    raw: true,
    signal,
  });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    onOpen?.();
    await read(reader, onEvent);
  } finally {
    // An event the page could not take ends the stream here, not in the background.
    reader.cancel().catch(() => {});
  }
}

async function read(reader, onEvent) {
  let buf = "";
  let ev = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (ev.data.length) {
          onEvent({ event: ev.event, data: ev.data.join("\n"), id: ev.id });
        }
        ev = { event: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const val = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data.push(val);
        else if (field === "id") ev.id = val;
      }
    }
  }
}

// The terminal's WebSocket: the key goes as a subprotocol (browsers cannot set headers on a
// WebSocket), beside `warren.terminal`, which the server answers with.
export function terminalSocket(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return new WebSocket(`${scheme}//${location.host}/v1${path}`, [
    "warren.terminal",
    "warren.key." + key(),
  ]);
}

// A path segment or query value, escaped.
export const q = encodeURIComponent;
