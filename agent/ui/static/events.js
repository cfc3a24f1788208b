// The events table, live: each new event that matches the page's filters comes as a server-sent
// "row" (HTML the server rendered and escaped) and goes on top; rows beyond the page's size leave.
(function () {
  "use strict";
  var body = document.getElementById("events-rows");
  if (!body || !body.getAttribute("data-events-stream")) return;
  var status = document.getElementById("events-status");
  var MAX = 500;
  var source = new EventSource(body.getAttribute("data-events-stream"));
  source.addEventListener("hello", function () { status.textContent = "live"; body.setAttribute("data-state", "open"); });
  source.addEventListener("row", function (e) {
    var holder = document.createElement("tbody");
    holder.innerHTML = e.data;  // rendered and escaped by the server (templates/_event_row.html)
    var row = holder.firstElementChild;
    if (!row) return;
    var index = row.getAttribute("data-index");
    if (body.querySelector('tr[data-index="' + index + '"]')) return;  // a reconnect sends it again
    body.insertBefore(row, body.firstChild);
    while (body.children.length > MAX) body.removeChild(body.lastChild);
  });
  source.addEventListener("session", function (e) {
    source.close();
    status.textContent = "stopped: " + e.data;
  });
  source.onerror = function () { status.textContent = "reconnecting…"; body.setAttribute("data-state", "down"); };
})();
