// A file browser: list a directory, go in and up, download, remove, upload files into it.
import * as api from "./api.js";
import { h, fill, bytes, when, attempt } from "./dom.js";

function join(dir, name) {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

function parent(dir) {
  const up = dir.replace(/\/[^/]*$/, "");
  return up || "/";
}

export function filesTab({ panel, signal, path, sandbox }) {
  const s = sandbox();
  let dir = s.user === "root" ? "/root" : `/home/${s.user}`;
  const where = h("nav.crumbs");
  const upload = h("input", { type: "file", multiple: true, id: "upload", "aria-label": "upload files" });
  const uploadLabel = h("label.button", { for: "upload" }, "Upload…");
  const body = h("tbody");
  fill(
    panel,
    h("div.toolbar", {}, where, h("span.spacer"), upload, uploadLabel),
    h("table.list.files", { id: "files" }, h("thead", {}, h("tr", {}, ["Name", "Size", "Mode", "Modified", ""].map((t) => h("th", {}, t)))), body),
  );

  function crumbs() {
    const parts = dir.split("/").filter(Boolean);
    const links = [h("a", { href: "#", on: { click: (e) => go(e, "/") } }, "/")];
    parts.forEach((p, i) => {
      const to = "/" + parts.slice(0, i + 1).join("/");
      links.push(h("a", { href: "#", on: { click: (e) => go(e, to) } }, p), i < parts.length - 1 ? "/" : "");
    });
    fill(where, links);
  }

  function go(ev, to) {
    ev?.preventDefault();
    dir = to;
    load();
  }

  async function download(entry) {
    await attempt(async () => {
      const resp = await api.call("GET", `${path}/files?path=${api.q(entry.path)}`, { raw: true, signal });
      const url = URL.createObjectURL(await resp.blob());
      const a = h("a", { href: url, download: entry.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
  }

  async function remove(entry, button) {
    if (!confirm(`Remove ${entry.path}${entry.type === "dir" ? " and everything in it" : ""}?`)) return;
    const done = await attempt(() => api.del(`${path}/files?path=${api.q(entry.path)}`), button);
    if (done !== undefined) load();
  }

  async function load() {
    crumbs();
    let list;
    try {
      list = await api.get(`${path}/files/list?path=${api.q(dir)}`, { signal });
    } catch (e) {
      if (e.name === "AbortError") return;
      fill(body, h("tr", {}, h("td.error-text", { colSpan: 5 }, e.message)));
      return;
    }
    const entries = list.entries.sort((a, b) => (b.type === "dir") - (a.type === "dir") || a.name.localeCompare(b.name));
    fill(
      body,
      dir !== "/" ? h("tr", {}, h("td", { colSpan: 5 }, h("a", { href: "#", on: { click: (e) => go(e, parent(dir)) } }, ".."))) : null,
      entries.map((e) =>
        h(
          "tr",
          { dataset: { name: e.name } },
          h("td", {}, e.type === "dir" ? h("a.dir", { href: "#", on: { click: (ev) => go(ev, e.path) } }, e.name + "/") : h("span.mono", {}, e.name)),
          h("td", {}, e.type === "dir" ? "" : bytes(e.size)),
          h("td.mono", {}, (e.mode & 0o7777).toString(8).padStart(4, "0")),
          h("td", { title: e.modified_at || "" }, when(e.modified_at)),
          h(
            "td.row-actions",
            {},
            e.type === "file" ? h("button.link", { on: { click: () => download(e) } }, "download") : null,
            h("button.link.danger", { on: { click: (ev) => remove(e, ev.target) } }, "remove"),
          ),
        ),
      ),
      entries.length ? null : h("tr", {}, h("td.muted", { colSpan: 5 }, "Empty.")),
    );
  }

  upload.addEventListener("change", async () => {
    for (const file of upload.files) {
      const target = join(dir, file.name);
      const ok = await attempt(() =>
        api.call("PUT", `${path}/files?path=${api.q(target)}`, { body: file, headers: { "Content-Type": "application/octet-stream" } }),
      );
      if (ok === undefined) break;
    }
    upload.value = "";
    load();
  });

  // A directory that is not there (a user without a home) falls back to the root.
  api
    .get(`${path}/files/list?path=${api.q(dir)}`, { signal })
    .catch(() => (dir = "/"))
    .finally(load);
}
