// One sandbox: its state and actions above, a tab below (overview, metrics, logs, history,
// terminal, files).
import * as api from "./api.js";
import { h, fill, when, bytes, stateBadge, attempt, notice } from "./dom.js";
import { followEvents } from "./list.js";
import { metricsTab } from "./metrics.js";
import { logsTab, historyTab } from "./logs.js";
import { terminalTab } from "./terminal.js";
import { filesTab } from "./files.js";

const TABS = {
  overview: ["Overview", overviewTab],
  metrics: ["Metrics", metricsTab],
  logs: ["Logs", logsTab],
  history: ["History", historyTab],
  terminal: ["Terminal", terminalTab],
  files: ["Files", filesTab],
};

// The actions each state allows (the server still decides: a backend without pause says so).
const ACTIONS = {
  running: ["stop", "pause", "snapshot", "delete"],
  stopped: ["start", "delete"],
  paused: ["resume", "delete"],
  failed: ["delete"],
};

export async function sandboxPage({ main, signal }, id, tab) {
  const path = `/sandboxes/${api.q(id)}`;
  let sandbox = await attempt(() => api.get(path, { signal }));
  if (signal.aborted) return;
  if (!sandbox) {
    fill(main, h("p", {}, "This sandbox could not be read. ", h("a", { href: "#/" }, "Back to the list")));
    return;
  }
  const head = h("div.toolbar");
  const actions = h("div.actions");
  const tabs = h(
    "nav.tabs",
    {},
    Object.entries(TABS).map(([key, [label]]) =>
      h(`a${key === tab ? ".active" : ""}`, { href: `#/s/${api.q(id)}/${key}`, dataset: { tab: key } }, label),
    ),
  );
  const panel = h("section.panel");
  fill(main, head, actions, tabs, panel);
  // The tab's own view of a change (overview redraws; others may ignore it).
  let onChange = () => {};

  function renderHead() {
    fill(head, h("h1.mono", {}, sandbox.id), stateBadge(sandbox.state), h("span.muted", {}, sandbox.image), h("span.spacer"));
    const allowed = ACTIONS[sandbox.state] || ["delete"];
    fill(actions, allowed.map((a) => h(`button${a === "delete" ? ".danger" : ""}`, { dataset: { action: a }, on: { click: (ev) => act(a, ev.target) } }, a)));
    if (sandbox.error) actions.append(h("span.error-text", {}, sandbox.error));
  }

  async function act(action, button) {
    if (action === "delete") {
      if (!confirm(`Delete sandbox ${id} and everything in it?`)) return;
      const done = await attempt(() => api.del(path), button);
      if (done !== undefined) location.hash = "#/";
      return;
    }
    if (action === "snapshot") {
      const name = prompt("Snapshot name (a-z, 0-9, - and _):", `${id.slice(0, 12)}-${Date.now() % 100000}`);
      if (!name) return;
      const snap = await attempt(() => api.post(`${path}/snapshots`, { name }), button);
      if (snap) notice(`Snapshot ${snap.name} made.`, "ok");
      return;
    }
    const s = await attempt(() => api.post(`${path}/${action}`, {}), button);
    if (s && s.id) update(s);
  }

  function update(s) {
    sandbox = { ...sandbox, ...s };
    renderHead();
    onChange(sandbox);
  }

  renderHead();
  // Each time the stream opens the sandbox is read again: a change between the first read and
  // the stream (a create that ran meanwhile) is not missed.
  followEvents(
    signal,
    (s) => {
      if (s.id !== id) return;
      if (s.state === "deleted") {
        notice(`Sandbox ${id} was deleted.`, "ok");
        location.hash = "#/";
      } else update(s);
    },
    async () => {
      const s = await api.get(path, { signal }).catch(() => null);
      if (s && !signal.aborted) update(s);
    },
  );
  const [, show] = TABS[tab] || TABS.overview;
  onChange = show({ panel, signal, path, sandbox: () => sandbox }) || onChange;
}

function row(label, value) {
  return h("tr", {}, h("th", {}, label), h("td", {}, value));
}

// A preview URL as a link that opens it in a new window: private ports with the sandbox's
// traffic token once (the proxy swaps it for a cookie of that host); never the API key.
function previewLink(s, port, url) {
  const href = !s.public && s.traffic_token ? `${url}${url.includes("?") ? "&" : "?"}warren_token=${api.q(s.traffic_token)}` : url;
  return h("a.preview", { href, target: "_blank", rel: "noopener noreferrer", dataset: { port } }, url);
}

function overviewTab({ panel, signal, path, sandbox }) {
  const body = h("div");
  fill(panel, body);
  function render(s) {
    const listening = new Map((s.ports || []).map((p) => [String(p.port), p]));
    const ports = new Set([...Object.keys(s.urls || {}), ...listening.keys()]);
    fill(
      body,
      h(
        "div.columns",
        {},
        h(
          "div.card",
          {},
          h("h2", {}, "Details"),
          h(
            "table.kv",
            {},
            row("Runtime", s.runtime),
            row("Image", h("span.mono", {}, s.image)),
            row("Image digest", h("span.mono.small", {}, s.image_digest)),
            row("Command", s.cmd?.length ? h("code", {}, s.cmd.join(" ")) : "none"),
            row("User", s.user),
            row("Address", s.ip || "–"),
            row("Created", `${s.created_at} (${when(s.created_at)})`),
            row("Started", s.started_at ? `${s.started_at} (${when(s.started_at)})` : "–"),
            row("Expires", s.expires_at ? `${s.expires_at} (${when(s.expires_at)}, then ${s.on_timeout})` : "never"),
            row("Outbound network", typeof s.egress === "string" ? s.egress : JSON.stringify(s.egress)),
            row("Metadata", Object.entries(s.metadata || {}).map(([k, v]) => h("span.tag", {}, `${k}=${v}`))),
            row("Environment", Object.keys(s.env || {}).map((k) => h("span.tag", {}, k))),
          ),
        ),
        h(
          "div.card",
          {},
          h("h2", {}, "Limits"),
          h("table.kv", {}, row("CPU", `${s.cpu} ${s.cpu === 1 ? "core" : "cores"}`), row("Memory", bytes(s.memory_mb * 1048576)), row("Disk", bytes(s.disk_mb * 1048576)), row("Processes", s.pids)),
          h("h2", {}, "Preview links"),
          ports.size
            ? h(
                "ul.previews",
                {},
                [...ports].map((p) =>
                  h("li", {}, h("span.mono", {}, `:${p} `), s.urls?.[p] ? previewLink(s, p, s.urls[p]) : h("span.muted", {}, `listening on ${listening.get(p)?.address} only (not reachable)`)),
                ),
              )
            : h("p.muted", {}, s.state === "running" ? "Nothing listens yet: start a server on 0.0.0.0 (e.g. in the terminal)." : "Not running."),
        ),
      ),
    );
  }
  render(sandbox());
  // Listening ports are asked of the agent on each read: look again now and then.
  const refresh = setInterval(async () => {
    if (sandbox().state !== "running") return;
    const s = await api.get(path, { signal }).catch(() => null);
    if (s) render(s);
  }, 3000);
  signal.addEventListener("abort", () => clearInterval(refresh));
  return render;
}
