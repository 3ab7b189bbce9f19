// The main command's log, followed (and resumed after a break from the last line seen), and
// the history of commands run in the sandbox as a transcript.
import * as api from "./api.js";
import { h, fill } from "./dom.js";

const MAX_LINES = 5000;

export function logsTab({ panel, signal, path }) {
  const out = h("pre.log", { id: "log" });
  const status = h("span.muted", {}, "connecting…");
  const follow = h("input", { type: "checkbox", checked: true });
  fill(panel, h("div.toolbar", {}, h("label.check", {}, follow, " keep the newest in view"), h("span.spacer"), status), out);
  let last = null;

  function append(line) {
    const cls = line.stream === "stderr" ? "err" : line.stream === "event" ? "event" : "out";
    out.append(h(`span.${cls}`, { title: line.ts }, line.text + "\n"));
    while (out.childNodes.length > MAX_LINES) out.firstChild.remove();
    if (follow.checked) out.scrollTop = out.scrollHeight;
  }

  (async () => {
    let delay = 500;
    while (!signal.aborted) {
      try {
        const headers = last === null ? {} : { "Last-Event-ID": last };
        status.textContent = "● following";
        await api.events("GET", `${path}/logs?follow=true`, {
          signal,
          headers,
          onEvent: (ev) => {
            if (ev.event !== "message" && ev.event !== "log") return;
            delay = 500;
            const line = JSON.parse(ev.data);
            last = ev.id ?? String(line.seq);
            append(line);
          },
        });
        status.textContent = "stream ended; reconnecting…";
      } catch (e) {
        if (signal.aborted) return;
        status.textContent = `${e.message}; retrying…`;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
}

export function historyTab({ panel, signal, path }) {
  const list = h("div.transcript", { id: "history" });
  const refresh = h("button", {}, "Refresh");
  fill(panel, h("div.toolbar", {}, h("span.muted", {}, "Commands run in this sandbox (exec, E2B, MCP), oldest first."), h("span.spacer"), refresh), list);

  // Redrawn only when something was added (a redraw would lose the reader's place).
  let seen = "";
  async function load() {
    try {
      const { execs } = await api.get(`${path}/execs?limit=200`, { signal });
      const now = execs.map((e) => `${e.id}:${e.exit_code}`).join(",");
      if (now === seen) return;
      seen = now;
      fill(
        list,
        execs.length
          ? execs.map((e) =>
              h(
                "article.entry",
                {},
                h(
                  "header",
                  {},
                  h("code.cmd", {}, "$ " + e.cmd.join(" ")),
                  e.label ? h("span.tag", {}, e.label) : null,
                  h("span.spacer"),
                  h(`span.exit${e.exit_code === 0 ? ".ok" : ".bad"}`, {}, e.exit_code === null ? "no exit status" : `exit ${e.exit_code}`),
                  h("span.muted", { title: e.started_at }, ` ${e.duration_ms} ms · ${new Date(e.started_at).toLocaleTimeString()}`),
                ),
                e.stdout ? h("pre.out", {}, e.stdout.replace(/\n$/, "")) : null,
                e.stderr ? h("pre.err", {}, e.stderr.replace(/\n$/, "")) : null,
              ),
            )
          : h("p.muted", {}, "No commands yet."),
      );
    } catch (e) {
      if (e.name !== "AbortError") fill(list, h("p.error-text", {}, e.message));
    }
  }
  refresh.addEventListener("click", () => {
    seen = "";
    load();
  });
  load();
  const timer = setInterval(load, 10000);
  signal.addEventListener("abort", () => clearInterval(timer));
}
