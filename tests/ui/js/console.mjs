// Drives Warren's web console in Debian's Chromium (playwright-core, no bundled browser):
// sign in, create a sandbox, read its preview, type in its terminal, upload a file, read its
// metrics, logs and history, pull an image, delete the sandbox, sign out. Screenshots of each
// page go to SHOTS. Run by crates/warren-cli/tests/console.rs, which starts the server.
//
//   WARREN_URL, WARREN_API_KEY  the server and a key of it
//   PULL_REF                    an image reference the server can pull (a test registry's)
//   SHOTS                       where the screenshots go
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const url = process.env.WARREN_URL;
const key = process.env.WARREN_API_KEY;
const pullRef = process.env.PULL_REF;
const shots = process.env.SHOTS;
if (!url || !key || !pullRef || !shots) {
  throw new Error("WARREN_URL, WARREN_API_KEY, PULL_REF and SHOTS must be set");
}
mkdirSync(shots, { recursive: true });
const api = new URL(url);
const step = (what) => console.log(`==> ${what}`);

async function call(method, path, body) {
  const resp = await fetch(`${url}/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const text = await resp.text();
  const json = (resp.headers.get("content-type") || "").includes("json");
  return { status: resp.status, body: json ? JSON.parse(text) : text };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
page.setDefaultTimeout(60000);

// What the browser did that the console must never do: run a script or style the policy
// refused, throw, or send the key anywhere but this origin's API (or in a URL).
const problems = [];
// The wrong key's 401 at sign-in is the one failed load expected.
let signingIn = true;
page.on("console", (m) => {
  if (m.type() === "error" && !(signingIn && m.text().includes("status of 401"))) problems.push(`console error: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
context.on("request", (r) => {
  const u = new URL(r.url());
  if (r.url().includes(key)) problems.push(`the key in a URL: ${r.url()}`);
  const auth = r.headers()["authorization"] || "";
  if (auth.includes(key) && (u.host !== api.host || !u.pathname.startsWith("/v1/"))) {
    problems.push(`the key sent to ${r.url()}`);
  }
});
// WebSockets are not requests to Playwright: their handshake headers are checked by the
// server-side test (console.rs); here, where they go.
const sockets = [];
page.on("websocket", (ws) => {
  sockets.push(ws.url());
  const u = new URL(ws.url());
  if (ws.url().includes(key) || u.host !== api.host || !/^\/v1\/sandboxes\/[^/]+\/pty$/.test(u.pathname)) {
    problems.push(`a WebSocket to ${ws.url()}`);
  }
});
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png` });

step("sign in");
await page.goto(`${url}/ui/`);
await page.waitForSelector("form.sign-in");
await page.fill("#key", "wk_not_a_key");
await page.click("form.sign-in button");
await page.waitForSelector("#notice:not([hidden])");
await shot("sign-in");
await page.fill("#key", key);
await page.click("form.sign-in button");
await page.waitForSelector("h1:text('Sandboxes')");
signingIn = false;
if (await page.evaluate(() => sessionStorage.getItem("warren.key")) !== key) {
  throw new Error("the key is not in the tab's session");
}
if (await page.evaluate(() => localStorage.length) !== 0) throw new Error("localStorage used");

step("create a sandbox (busybox, demo server on port 8000)");
await page.click("a[href='#/new']");
await page.fill("input[name=image]", "busybox");
await page.fill("input[name=cmd]", "exec /.warren/agent demo-http 8000");
await page.fill("textarea[name=metadata]", "owner=console-test");
await shot("create");
await page.click("form.create button[type=submit]");
await page.waitForURL(/#\/s\//);
const id = decodeURIComponent(page.url().split("#/s/")[1].split("/")[0]);
console.log(`sandbox ${id}`);
await page.waitForSelector(".toolbar [data-state=running]");

step("the list shows it live, and filters");
await page.click("a[data-nav=sandboxes]");
await page.waitForSelector(`tr[data-id="${id}"] [data-state=running]`);
await page.fill("#filter-metadata", "owner=someone-else");
await page.waitForSelector(`tr[data-id="${id}"]`, { state: "detached" });
await page.fill("#filter-metadata", "owner=console-test");
await page.waitForSelector(`tr[data-id="${id}"]`);
// A sandbox made elsewhere appears without a reload (from /v1/events).
const other = await call("POST", "/sandboxes", { image: "busybox", metadata: { owner: "console-test" } });
if (other.status !== 201) throw new Error(`create: ${JSON.stringify(other)}`);
await page.waitForSelector(`tr[data-id="${other.body.id}"] [data-state=running]`);
await shot("sandboxes");
await call("DELETE", `/sandboxes/${other.body.id}`);
await page.waitForSelector(`tr[data-id="${other.body.id}"]`, { state: "detached" });

step("overview and its preview link");
await page.click(`tr[data-id="${id}"] a`);
const link = page.locator("a.preview[data-port='8000']");
await link.waitFor();
await shot("sandbox");
const [preview] = await Promise.all([context.waitForEvent("page"), link.click()]);
await preview.waitForLoadState();
const previewText = await preview.textContent("body");
if (!previewText.includes("demo")) throw new Error(`the preview answered: ${previewText}`);
if (new URL(preview.url()).host === api.host) throw new Error("the preview is on the console's origin");
await preview.screenshot({ path: `${shots}/preview.png` });
// What the app saw of the browser's requests: no key (the token became a cookie the proxy takes off).
await preview.goto(new URL("/headers", preview.url()).href);
const seen = await preview.textContent("body");
if (!seen.toLowerCase().includes("host") || seen.includes(key) || /wk_|warren_token/i.test(seen)) {
  throw new Error(`the app saw: ${seen}`);
}
await preview.close();

step("terminal: type a command, read its output");
await page.click("nav.tabs a[data-tab=terminal]");
await page.waitForSelector("text=● connected");
await page.click("#terminal");
await page.keyboard.type("echo console-$((6*7)) > /tmp/typed; cat /tmp/typed\n");
await page.waitForFunction(() => document.querySelector("#terminal .xterm-rows")?.textContent.includes("console-42"));
// The terminal was fitted to its box, and the shell was told (the resize message).
await page.keyboard.type("stty size\n");
await page.waitForFunction(() => /\n?\s*(\d+) (\d+)\s*$/m.test(document.querySelector("#terminal .xterm-rows")?.innerText.split("stty size")[1] || ""));
const size = await page.evaluate(() => document.querySelector("#terminal .xterm-rows").innerText.split("stty size")[1].trim().split(/\s+/).slice(0, 2).map(Number));
if (size[1] <= 80 || size[0] === 24) throw new Error(`the terminal was not resized: stty size says ${size}`);
await shot("terminal");
const typed = await call("GET", `/sandboxes/${id}/files?path=/tmp/typed`);
if (typed.status !== 200) throw new Error(`the terminal's file: ${JSON.stringify(typed)}`);

step("files: upload one and see it listed");
await page.click("nav.tabs a[data-tab=files]");
await page.waitForSelector("#files tbody tr");
await page.setInputFiles("#upload", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("uploaded from the console\n") });
await page.waitForSelector("#files tr[data-name='notes.txt']");
await shot("files");
const [download] = await Promise.all([page.waitForEvent("download"), page.click("#files tr[data-name='notes.txt'] button:text('download')")]);
const saved = await download.path();
const { readFileSync } = await import("node:fs");
if (readFileSync(saved, "utf8") !== "uploaded from the console\n") throw new Error("the download reads otherwise");
const dir = await page.locator(".crumbs").textContent();
const back = await fetch(`${url}/v1/sandboxes/${id}/files?path=${encodeURIComponent((dir === "/" ? "" : dir) + "/notes.txt")}`, { headers: { Authorization: `Bearer ${key}` } });
if ((await back.text()) !== "uploaded from the console\n") throw new Error(`the uploaded file (${dir}) reads otherwise`);

step("history: a command run through the API, as a transcript");
await call("POST", `/sandboxes/${id}/exec`, { cmd: ["sh", "-c", "echo from-the-api; echo oops >&2; exit 3"], label: "A labelled command" });
await page.click("nav.tabs a[data-tab=history]");
await page.waitForSelector("#history .entry:has-text('from-the-api') .exit.bad");
await shot("history");

step("logs and metrics (under a little load: a busy loop, 32 MiB written)");
await call("POST", `/sandboxes/${id}/exec`, { cmd: ["sh", "-c", "(timeout 15 sh -c 'while :; do :; done'; dd if=/dev/zero of=/root/fill bs=1M count=32) >/dev/null 2>&1 &"] });
await page.click("nav.tabs a[data-tab=logs]");
await page.waitForSelector("#log span");
await shot("logs");
await page.click("nav.tabs a[data-tab=metrics]");
await page.waitForSelector("figure.metric[data-metric=Memory] polyline", { state: "attached" });
await page.waitForTimeout(12000);
await shot("metrics");

step("images: pull one with its progress");
await page.click("a[data-nav=images]");
await page.fill("#pull-ref", pullRef);
await page.click("form.toolbar button[type=submit]");
await page.waitForSelector("#pull-progress :text('Pulled')");
await page.waitForSelector("#pull-progress li[data-status=done]");
await shot("images");

step("stop and start, pause and resume");
await page.goto(`${url}/ui/#/s/${encodeURIComponent(id)}`);
for (const [action, settled] of [["stop", "stopped"], ["start", "running"], ["pause", "paused"], ["resume", "running"]]) {
  await page.click(`button[data-action=${action}]`);
  await page.waitForSelector(`.toolbar [data-state=${settled}]`);
}

step("snapshot");
const snapName = `console-${Date.now() % 100000}`;
page.once("dialog", (d) => d.accept(snapName));
await page.click("button[data-action=snapshot]");
await page.waitForSelector(`#notice.ok:has-text('Snapshot ${snapName} made.')`);
const snap = await call("GET", `/snapshots/${snapName}`);
if (snap.status !== 200) throw new Error(`the snapshot: ${JSON.stringify(snap)}`);
await call("DELETE", `/snapshots/${snapName}`);

step("delete the sandbox");
await page.goto(`${url}/ui/#/s/${encodeURIComponent(id)}`);
page.once("dialog", (d) => d.accept());
await page.click("button[data-action=delete]");
await page.waitForSelector("h1:text('Sandboxes')");
await page.waitForSelector(`tr[data-id="${id}"]`, { state: "detached" });
const gone = await call("GET", `/sandboxes/${id}`);
if (gone.status !== 404 && gone.body?.state !== "deleted") throw new Error(`after delete: ${JSON.stringify(gone)}`);

step("sign out");
await page.click("#sign-out");
await page.waitForSelector("form.sign-in");
if (await page.evaluate(() => sessionStorage.getItem("warren.key")) !== null) throw new Error("the key outlived the sign-out");

await browser.close();
if (!sockets.length) problems.push("the terminal opened no WebSocket");
if (problems.length) {
  throw new Error(`the browser saw:\n${problems.join("\n")}`);
}
console.log("console test passed");
