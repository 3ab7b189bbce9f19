// A terminal in the sandbox: xterm.js over `/v1/sandboxes/{id}/pty` (binary frames both ways,
// `{"resize": …}` text frames from here, `{"exit": N}` from the server), fitted to its box.
import { Terminal } from "../vendor/xterm.mjs";
import { FitAddon } from "../vendor/addon-fit.mjs";
import * as api from "./api.js";
import { h, fill } from "./dom.js";

export function terminalTab({ panel, signal, path, sandbox }) {
  const box = h("div.terminal", { id: "terminal" });
  const status = h("span.muted", {}, "");
  const again = h("button", { hidden: true }, "New session");
  fill(panel, h("div.toolbar", {}, h("span.muted", {}, "A shell in the sandbox (sh)."), h("span.spacer"), status, again), box);
  if (sandbox().state !== "running") {
    status.textContent = "The sandbox is not running.";
  }
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const encoder = new TextEncoder();
  let socket = null;

  function connect() {
    again.hidden = true;
    status.textContent = "connecting…";
    const ws = api.terminalSocket(`${path}/pty?cols=${term.cols}&rows=${term.rows}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      status.textContent = "● connected";
      term.focus();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        try {
          const end = JSON.parse(ev.data);
          if ("exit" in end) term.write(`\r\n[exited ${end.exit}${end.error ? ": " + end.error : ""}]\r\n`);
        } catch {
          // Not ours to read.
        }
      } else {
        term.write(new Uint8Array(ev.data));
      }
    };
    ws.onclose = () => {
      if (socket === ws) {
        status.textContent = "closed";
        again.hidden = false;
      }
    };
    socket = ws;
  }

  term.onData((d) => socket?.readyState === WebSocket.OPEN && socket.send(encoder.encode(d)));
  term.onBinary((d) => socket?.readyState === WebSocket.OPEN && socket.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => socket?.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ resize: { cols, rows } })));
  const observer = new ResizeObserver(() => fit.fit());
  observer.observe(box);
  again.addEventListener("click", connect);
  if (sandbox().state === "running") connect();
  signal.addEventListener("abort", () => {
    observer.disconnect();
    const ws = socket;
    socket = null;
    ws?.close();
    term.dispose();
  });
}
