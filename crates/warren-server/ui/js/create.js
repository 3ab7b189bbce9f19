// The create form: `POST /v1/sandboxes` with what the user filled in; then the sandbox's page,
// where its start is followed live.
import * as api from "./api.js";
import { h, fill, attempt, notice } from "./dom.js";

// "KEY=VALUE" lines into an object; a line without "=" is an error naming it.
function pairs(text, what) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`${what}: "${line}" is not KEY=VALUE`);
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

function field(label, input, hint) {
  return h("label.field", {}, h("span", {}, label), input, hint ? h("small.muted", {}, hint) : null);
}

export async function createPage({ main, signal }) {
  const images = await attempt(() => api.get("/images", { signal }));
  if (signal.aborted) return;
  const f = {
    image: h("input", { name: "image", value: "base", list: "image-names", required: true }),
    runtime: h("select", { name: "runtime" }, h("option", { value: "" }, "server default"), h("option", { value: "gvisor" }, "gvisor"), h("option", { value: "runc" }, "runc")),
    cpu: h("input", { name: "cpu", type: "number", step: "0.1", min: "0.1", placeholder: "1" }),
    memory: h("input", { name: "memory_mb", type: "number", min: "16", placeholder: "512" }),
    disk: h("input", { name: "disk_mb", type: "number", min: "16", placeholder: "2048" }),
    timeout: h("input", { name: "timeout_s", type: "number", min: "0", placeholder: "300" }),
    cmd: h("input", { name: "cmd", placeholder: "e.g. python3 -m http.server 8000 (run with sh -c)" }),
    env: h("textarea", { name: "env", rows: 3, placeholder: "KEY=VALUE, one a line" }),
    metadata: h("textarea", { name: "metadata", rows: 2, placeholder: "key=value, one a line" }),
    egress: h("select", { name: "egress" }, ["allow", "deny", "only"].map((e) => h("option", { value: e }, e === "only" ? "only these:" : e))),
    allow: h("input", { name: "allow", placeholder: "networks, addresses or domains, space-separated" }),
    public: h("input", { name: "public", type: "checkbox" }),
  };
  const submit = h("button.primary", { type: "submit" }, "Create");
  const num = (el) => (el.value === "" ? undefined : Number(el.value));
  const form = h(
    "form.card.create",
    {
      on: {
        submit: async (ev) => {
          ev.preventDefault();
          let req;
          try {
            req = {
              image: f.image.value.trim(),
              runtime: f.runtime.value || undefined,
              cpu: num(f.cpu),
              memory_mb: num(f.memory),
              disk_mb: num(f.disk),
              timeout_s: num(f.timeout),
              cmd: f.cmd.value.trim() ? ["sh", "-c", f.cmd.value] : undefined,
              env: pairs(f.env.value, "environment"),
              metadata: pairs(f.metadata.value, "metadata"),
              egress: f.egress.value === "only" ? { allow: f.allow.value.split(/\s+/).filter(Boolean) } : f.egress.value,
              public: f.public.checked,
              wait: false,
            };
          } catch (e) {
            notice(e.message);
            return;
          }
          const s = await attempt(() => api.post("/sandboxes", req), submit);
          if (s) location.hash = `#/s/${api.q(s.id)}`;
        },
      },
    },
    h("h1", {}, "New sandbox"),
    h("datalist", { id: "image-names" }, (images?.images || []).map((i) => h("option", { value: i.name }))),
    h(
      "div.grid",
      {},
      field("Image", f.image, "a name from Images, or a registry reference"),
      field("Runtime", f.runtime),
      field("CPU cores", f.cpu),
      field("Memory (MiB)", f.memory),
      field("Disk (MiB)", f.disk),
      field("Timeout (s)", f.timeout, "0: never; counted from when it runs"),
    ),
    field("Main command", f.cmd),
    field("Environment", f.env),
    field("Metadata", f.metadata),
    h("div.grid", {}, field("Outbound network", f.egress), field("Allowed", f.allow)),
    h("label.check", {}, f.public, " Public ports (preview URLs open to anyone, no token)"),
    h("div.actions", {}, submit, h("a.button", { href: "#/" }, "Cancel")),
  );
  fill(main, form);
}
