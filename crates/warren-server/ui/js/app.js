// The console's entry: sign-in, then a page per hash route.
//   #/            sandboxes        #/new        create form
//   #/s/ID/TAB    one sandbox      #/images     images
import "./nonce.js";
import * as api from "./api.js";
import { h, fill, notice, clearNotice } from "./dom.js";
import { listPage } from "./list.js";
import { createPage } from "./create.js";
import { sandboxPage } from "./sandbox.js";
import { imagesPage } from "./images.js";

const main = document.getElementById("main");
// What the current page runs (streams, timers, sockets) stops when it is left.
let leave = new AbortController();

function signInPage() {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  fill(document.getElementById("who"));
  const input = h("input", {
    id: "key",
    type: "password",
    name: "key",
    autocomplete: "off",
    placeholder: "wk_…",
    required: true,
  });
  const form = h(
    "form.card.sign-in",
    {
      on: {
        submit: async (ev) => {
          ev.preventDefault();
          const k = input.value.trim();
          try {
            await api.check(k);
          } catch (e) {
            notice(e.message);
            return;
          }
          api.setKey(k);
          clearNotice();
          route();
        },
      },
    },
    h("h1", {}, "Sign in"),
    h("p.muted", {}, "With a Warren API key (`warren key create`, or the one `warren serve` printed). It is kept in this tab only and sent only to this server's API."),
    h("label", { for: "key" }, "API key"),
    input,
    h("button.primary", { type: "submit" }, "Sign in"),
  );
  fill(main, form);
  input.focus();
}

function signOut() {
  api.forgetKey();
  leave.abort();
  location.hash = "#/";
  signInPage();
}

async function route() {
  leave.abort();
  leave = new AbortController();
  if (!api.key()) {
    signInPage();
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] || "sandboxes";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === (page === "s" ? "sandboxes" : page));
  }
  const ctx = { main, signal: leave.signal };
  if (page === "sandboxes") listPage(ctx);
  else if (page === "new") createPage(ctx);
  else if (page === "s" && parts[1]) sandboxPage(ctx, parts[1], parts[2] || "overview");
  else if (page === "images") imagesPage(ctx);
  else fill(main, h("p", {}, "No such page. ", h("a", { href: "#/" }, "Sandboxes")));
}

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
window.addEventListener("warren:unauthorized", () => {
  if (api.key()) {
    api.forgetKey();
    // The page's streams, timers and terminal stop with the key.
    leave.abort();
    leave = new AbortController();
    notice("The server no longer takes this key: sign in again.");
    signInPage();
  }
});
route();
