// Runs before xterm.js loads: the page's CSP allows <style> elements only with its nonce, and xterm.js
// makes some (its cell sizes, its theme). Every <style> created from now on carries the nonce, set
// before it is inserted (xtermjs/xterm.js#4445).
(function () {
  "use strict";
  var el = document.getElementById("terminal");
  var nonce = el && el.getAttribute("data-style-nonce");
  if (!nonce) return;
  var create = Document.prototype.createElement;
  Document.prototype.createElement = function (name, options) {
    var made = create.call(this, name, options);
    if (String(name).toLowerCase() === "style") made.setAttribute("nonce", nonce);
    return made;
  };
})();
