// The sandbox list: live states from `/v1/events`, filters by state, image and metadata.
import * as api from "./api.js";
import { h, fill, when, stateBadge, attempt } from "./dom.js";

const STATES = ["running", "pending", "provisioning", "starting", "stopping", "stopped", "pausing", "paused", "resuming", "failed"];

// Follows `/v1/events` until `signal` aborts, calling `onSandbox` for each sandbox change and
// `onGap` whenever some may have been missed: each time the stream opens (what changed before
// it did, the first time included) and at a lag.
export async function followEvents(signal, onSandbox, onGap) {
  let delay = 500;
  while (!signal.aborted) {
    try {
      await api.events("GET", "/events", {
        signal,
        onOpen: onGap,
        onEvent: (ev) => {
          delay = 500;
          if (ev.event === "sandbox") onSandbox(JSON.parse(ev.data));
          else if (ev.event === "lagged") onGap();
        },
      });
    } catch (e) {
      if (signal.aborted || e.status === 401) return;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

export async function listPage({ main, signal }) {
  const sandboxes = new Map();
  const stateSel = h("select", { id: "filter-state", "aria-label": "state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s }, s)));
  const imageIn = h("input", { id: "filter-image", placeholder: "image contains…", "aria-label": "image" });
  const metaIn = h("input", { id: "filter-metadata", placeholder: "key=value …", "aria-label": "metadata" });
  const live = h("span.live.muted", {}, "connecting…");
  const body = h("tbody");
  const count = h("span.muted");
  fill(
    main,
    h("div.toolbar", {}, h("h1", {}, "Sandboxes"), count, h("span.spacer"), live, h("a.button.primary", { href: "#/new" }, "New sandbox")),
    h("div.filters", {}, stateSel, imageIn, metaIn),
    h("table.list", {}, h("thead", {}, h("tr", {}, ["Sandbox", "State", "Image", "Runtime", "Created", "Expires", "Metadata"].map((t) => h("th", {}, t)))), body),
  );

  function wanted(s) {
    if (s.state === "deleted" || s.pool) return false;
    if (stateSel.value && s.state !== stateSel.value) return false;
    if (imageIn.value && !s.image.includes(imageIn.value.trim())) return false;
    for (const pair of metaIn.value.split(/\s+/).filter(Boolean)) {
      const [k, ...rest] = pair.split("=");
      const v = rest.join("=");
      if (!(k in (s.metadata || {})) || (rest.length && s.metadata[k] !== v)) return false;
    }
    return true;
  }

  function render() {
    const shown = [...sandboxes.values()].filter(wanted).sort((a, b) => b.created_at.localeCompare(a.created_at));
    count.textContent = `${shown.length} of ${sandboxes.size}`;
    fill(
      body,
      shown.length
        ? shown.map((s) =>
            h(
              "tr",
              { dataset: { id: s.id } },
              h("td", {}, h("a.mono", { href: `#/s/${api.q(s.id)}` }, s.id)),
              h("td", {}, stateBadge(s.state)),
              h("td.mono", {}, s.image),
              h("td", {}, s.runtime),
              h("td", { title: s.created_at }, when(s.created_at)),
              h("td", { title: s.expires_at || "" }, s.expires_at ? when(s.expires_at) : "never"),
              h("td", {}, Object.entries(s.metadata || {}).map(([k, v]) => h("span.tag", {}, `${k}=${v}`))),
            ),
          )
        : h("tr", {}, h("td.muted", { colSpan: 7 }, sandboxes.size ? "No sandbox matches the filters." : "No sandboxes yet.")),
    );
  }

  async function reload() {
    const list = await attempt(() => api.get("/sandboxes", { signal }));
    if (!list || signal.aborted) return;
    sandboxes.clear();
    for (const s of list.sandboxes) sandboxes.set(s.id, s);
    render();
  }

  for (const el of [stateSel, imageIn, metaIn]) el.addEventListener("input", render);
  // The list is read each time the event stream opens, so nothing changes unseen between.
  followEvents(
    signal,
    (s) => {
      if (s.state === "deleted") sandboxes.delete(s.id);
      else sandboxes.set(s.id, s);
      render();
    },
    async () => {
      await reload();
      live.textContent = "● live";
    },
  );
  // Relative times age.
  const tick = setInterval(render, 15000);
  signal.addEventListener("abort", () => clearInterval(tick));
}
