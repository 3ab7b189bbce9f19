// The page's policy takes `<style>` elements only with its nonce; the terminal (xterm.js)
// makes its own for cell sizes and colours, so every style element made here carries it.
const nonce = document.querySelector('meta[name="warren-style-nonce"]')?.content || "";
const make = Document.prototype.createElement;
Document.prototype.createElement = function (tag, options) {
  const el = make.call(this, tag, options);
  if (nonce && String(tag).toLowerCase() === "style") {
    el.nonce = nonce;
  }
  return el;
};
