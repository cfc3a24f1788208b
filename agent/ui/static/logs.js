// A container's logs, followed: server-sent events whose data is HTML the server escaped and coloured
// (classes, never styles). The last data-keep lines are kept; the page says when the stream ends or
// fails, and offers to reconnect (the browser's own retry is turned off: it would repeat the tail).
(function () {
  "use strict";
  var pre = document.getElementById("logs");
  if (!pre) return;
  var status = document.getElementById("logs-status");
  var follow = document.getElementById("logs-follow");
  var again = document.getElementById("logs-reconnect");
  var keep = parseInt(pre.getAttribute("data-keep"), 10) || 5000;
  var source = null;

  function say(text, state) {
    status.textContent = text;
    pre.setAttribute("data-state", state);
  }
  function trim() {
    var lines = pre.children.length;
    while (lines > keep) { pre.removeChild(pre.firstChild); lines--; }
  }
  function append(html) {
    // one <span class="chunk"> per event (a line or a few): removing the oldest keeps the page bounded
    var chunk = document.createElement("span");
    chunk.className = "chunk";
    chunk.innerHTML = html;  // escaped by the server (agent/ui/ansi.py): only its spans
    pre.appendChild(chunk);
    trim();
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  }
  function stop(text, state) {
    if (source) { source.close(); source = null; }
    say(text, state);
    again.hidden = false;
  }
  function open() {
    pre.textContent = "";
    again.hidden = true;
    say("connecting…", "connecting");
    source = new EventSource(pre.getAttribute("data-logs-stream"));
    source.onopen = function () { say("following", "open"); };
    source.addEventListener("lines", function (e) { append(e.data); });
    source.addEventListener("end", function (e) { stop(e.data, "ended"); });
    source.addEventListener("failed", function (e) { stop(e.data, "failed"); });
    source.onerror = function () { stop("the connection to the agent was lost", "lost"); };
  }
  again.addEventListener("click", open);
  open();
})();
