// Small DOM helpers: elements are built with properties and text nodes only (no innerHTML),
// so nothing the server or a sandbox says is ever read as markup.

// h("tag.class", {props, on: {event: fn}, dataset}, ...children)
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) {
    el.className = classes.join(" ");
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k in el && typeof v !== "string") {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : v);
    }
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replaces what `el` holds.
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const span =
    abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}m` : abs < 86400 ? `${Math.round(abs / 3600)}h` : `${Math.round(abs / 86400)}d`;
  return s >= 0 ? `${span} ago` : `in ${span}`;
}

export function stateBadge(state) {
  return h(`span.badge.state-${state}`, { dataset: { state } }, state);
}

// The page-wide notice: an error (or a note) the user should read.
export function notice(message, kind = "error") {
  const n = document.getElementById("notice");
  n.className = `notice ${kind}`;
  fill(n, message, h("button.link", { on: { click: () => (n.hidden = true) }, "aria-label": "dismiss" }, "×"));
  n.hidden = false;
}

export function clearNotice() {
  document.getElementById("notice").hidden = true;
}

// Runs `fn`, showing its error as the notice; a button given is disabled meanwhile.
export async function attempt(fn, button) {
  if (button) button.disabled = true;
  try {
    clearNotice();
    return await fn();
  } catch (e) {
    if (e.name !== "AbortError") notice(e.code ? `${e.message} (${e.code})` : String(e.message || e));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
