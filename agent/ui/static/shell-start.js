// xterm.js over the API's exec websocket (docs/EXEC.md): binary frames are bytes whose first byte
// names the stream (0 input, 1 output, 2 errors), text frames JSON control messages ({"resize":
// [cols, rows]}, {"eof": true} one way; {"exit": code}, {"error": text} the other). The websocket
// carries the page's CSRF token (?csrf=): the server checks it and the Origin before anything runs.
// On its own the page opens only the default shell (data-autostart="1"); a command named in the page's
// link runs only when the person presses Open (a link must not run a command as whoever follows it).
(function () {
  "use strict";
  var el = document.getElementById("terminal");
  if (!el || typeof Terminal === "undefined") return;
  var status = document.getElementById("shell-status");
  var form = document.getElementById("shell-form");
  function say(text, state) {
    status.textContent = text;
    el.setAttribute("data-state", state);
  }

  var term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  var fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  var encoder = new TextEncoder();
  var ws = null;

  function resize() {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [term.cols, term.rows] }));
  }

  function connect(commandText) {
    var words = (commandText || "sh").trim().split(/\s+/).filter(Boolean);
    if (!words.length) words = ["sh"];
    var params = new URLSearchParams();
    words.forEach(function (w) { params.append("cmd", w); });
    params.append("tty", "1");
    params.append("interactive", "1");
    params.append("csrf", el.getAttribute("data-csrf"));
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      el.getAttribute("data-shell-ws") + "?" + params.toString();
    if (ws) { ws.onclose = null; ws.close(); }
    term.reset();
    say("connecting…", "connecting");
    var socket = new WebSocket(url);
    ws = socket;
    socket.binaryType = "arraybuffer";
    var opened = false;
    socket.onopen = function () {
      opened = true;
      say("connected: " + words.join(" "), "open");
      resize();
      term.focus();
    };
    socket.onmessage = function (e) {
      if (typeof e.data === "string") {
        var msg = {};
        try { msg = JSON.parse(e.data); } catch (err) { return; }
        if ("exit" in msg) {
          term.write("\r\n[exited" + (msg.exit === null ? "" : " with code " + msg.exit) + "]\r\n");
          say("exited" + (msg.exit === null ? "" : " with code " + msg.exit), "exited");
        } else if ("error" in msg) {
          term.write("\r\n[error: " + msg.error + "]\r\n");
          say("failed: " + msg.error, "failed");
        }
        return;
      }
      term.write(new Uint8Array(e.data).subarray(1));
    };
    socket.onclose = function (e) {
      if (!opened) {
        say("the shell could not be opened: the agent refused it or did not answer (reload the page)", "refused");
      } else if (el.getAttribute("data-state") === "open") {
        say("disconnected (" + e.code + ")", "closed");
      }
    };
  }

  term.onData(function (data) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    var bytes = encoder.encode(data);
    var frame = new Uint8Array(bytes.length + 1);
    frame[0] = 0;
    frame.set(bytes, 1);
    ws.send(frame);
  });
  term.onResize(resize);
  window.addEventListener("resize", function () { fit.fit(); });
  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();  // the person pressed Open: run what the form says, on this page
      connect(form.elements.cmd.value);
    });
  }
  if (el.getAttribute("data-autostart") === "1") {
    connect(el.getAttribute("data-command"));
  } else {
    el.setAttribute("data-state", "waiting");
  }
})();
