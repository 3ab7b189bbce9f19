// Images: the list, a pull with its progress layer by layer, delete.
import * as api from "./api.js";
import { h, fill, bytes, when, attempt, notice } from "./dom.js";

function progress(layers) {
  return h(
    "ul.layers",
    {},
    layers.map((l) => {
      const pct = l.total ? Math.floor((l.current / l.total) * 100) : l.status === "done" || l.status === "present" || l.status === "shared" ? 100 : 0;
      return h(
        "li",
        { dataset: { status: l.status } },
        h("span.mono", {}, l.digest.replace(/^sha256:/, "").slice(0, 12)),
        h("progress", { max: 100, value: pct }),
        h("span.muted", {}, `${l.status} ${l.total ? `${bytes(l.current)} / ${bytes(l.total)}` : ""}`),
      );
    }),
  );
}

export async function imagesPage({ main, signal }) {
  const body = h("tbody");
  const ref = h("input", { id: "pull-ref", placeholder: "registry/repository:tag", required: true, "aria-label": "image reference" });
  const pullBtn = h("button.primary", { type: "submit" }, "Pull");
  const pulling = h("div.pulling", { id: "pull-progress" });
  const form = h("form.toolbar", { on: { submit: pull } }, ref, pullBtn);
  fill(
    main,
    h("div.toolbar", {}, h("h1", {}, "Images")),
    h("div.card", {}, h("h2", {}, "Pull an image"), form, pulling),
    h("table.list", { id: "images" }, h("thead", {}, h("tr", {}, ["Name", "Size", "Digest", "Source", "Created", ""].map((t) => h("th", {}, t)))), body),
  );

  async function pull(ev) {
    ev.preventDefault();
    const layers = new Map();
    const title = h("p", {}, `Pulling ${ref.value.trim()}…`);
    const bars = h("div");
    fill(pulling, title, bars);
    const draw = () => fill(bars, progress([...layers.values()]));
    await attempt(
      () =>
        api.events("POST", "/images/pull", {
          json: { ref: ref.value.trim() },
          signal,
          onEvent: ({ data }) => {
            const e = JSON.parse(data);
            if (e.type === "resolved") {
              title.textContent = `Pulling ${e.reference} (${e.layers.length} layers)`;
              for (const l of e.layers) layers.set(l.digest, l);
            } else if (e.type === "layer") {
              layers.set(e.digest, e);
            } else if (e.type === "done") {
              title.textContent = `Pulled ${e.image.name} (${bytes(e.image.size)}).`;
              load();
            } else if (e.type === "error") {
              title.textContent = "Pull failed.";
              notice(`${e.error.message} (${e.error.code})`);
            }
            draw();
          },
        }),
      pullBtn,
    );
  }

  async function remove(image, button) {
    if (!confirm(`Delete image ${image.name}?`)) return;
    const name = image.name.split("/").map(api.q).join("/");
    const done = await attempt(() => api.del(`/images/${name}`), button);
    if (done !== undefined) load();
  }

  async function load() {
    const list = await attempt(() => api.get("/images", { signal }));
    if (!list) return;
    fill(
      body,
      list.images.length
        ? list.images.map((i) =>
            h(
              "tr",
              { dataset: { name: i.name } },
              h("td.mono", {}, i.name),
              h("td", {}, bytes(i.size)),
              h("td.mono.small", { title: i.digest }, i.digest.replace(/^sha256:/, "").slice(0, 12)),
              h("td.mono.small", {}, i.source || "imported"),
              h("td", { title: i.created_at }, when(i.created_at)),
              h("td", {}, h("button.link.danger", { on: { click: (ev) => remove(i, ev.target) } }, "delete")),
            ),
          )
        : h("tr", {}, h("td.muted", { colSpan: 6 }, "No images.")),
    );
  }
  load();
}
