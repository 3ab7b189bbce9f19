// Live metrics: `/v1/sandboxes/{id}/metrics` read every 2 s, the last 3 minutes drawn as
// line charts (SVG, made by hand: three polylines need no library).
import * as api from "./api.js";
import { h, fill, bytes } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const KEEP = 90;
const W = 600;
const H = 120;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// A chart of `values` (each 0..max) with its latest value as the caption.
function chart(title, values, max, label) {
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "chart", role: "img", "aria-label": title });
  for (const f of [0.25, 0.5, 0.75]) box.append(svg("line", { x1: 0, x2: W, y1: H * f, y2: H * f, class: "grid" }));
  const step = W / (KEEP - 1);
  const x0 = W - (values.length - 1) * step;
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(H - (Math.min(v, max) / (max || 1)) * (H - 4) - 2).toFixed(1)}`);
  if (pts.length) {
    box.append(svg("polygon", { points: `${x0},${H} ${pts.join(" ")} ${W},${H}`, class: "area" }));
    box.append(svg("polyline", { points: pts.join(" "), class: "line" }));
  }
  const last = values.length ? label(values[values.length - 1]) : "–";
  return h("figure.card.metric", { dataset: { metric: title } }, h("figcaption", {}, h("strong", {}, title), h("span.value", {}, last)), box);
}

export function metricsTab({ panel, signal, path }) {
  const samples = [];
  const body = h("div.charts");
  const note = h("p.muted", {}, "Reading…");
  fill(panel, note, body);

  function render() {
    const m = samples[samples.length - 1];
    if (!m) return;
    note.textContent = `Sampled every 2 s; the last ${Math.round((samples.length * 2) / 60 * 10) / 10} min. ${m.cpu_count} CPU, ${bytes(m.mem_total)} memory, ${bytes(m.disk_total)} disk.`;
    fill(
      body,
      chart("CPU", samples.map((s) => s.cpu_used_pct), 100, (v) => `${v.toFixed(1)} %`),
      chart("Memory", samples.map((s) => s.mem_used), m.mem_total, (v) => `${bytes(v)} of ${bytes(m.mem_total)}`),
      chart("Disk", samples.map((s) => s.disk_used), m.disk_total, (v) => `${bytes(v)} of ${bytes(m.disk_total)}`),
    );
  }

  async function sample() {
    try {
      const m = await api.get(`${path}/metrics`, { signal });
      samples.push(m);
      if (samples.length > KEEP) samples.shift();
      render();
    } catch (e) {
      if (e.name !== "AbortError") note.textContent = `No metrics: ${e.message}`;
    }
  }
  sample();
  const timer = setInterval(sample, 2000);
  signal.addEventListener("abort", () => clearInterval(timer));
}
