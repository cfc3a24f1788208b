// Corral's web UI: the little behaviour its pages need, by data- attributes (the CSP allows no inline
// script). The CSRF token on every htmx request; the live feed (server-sent events) that tells the
// page which parts to fetch again, with a banner while it is down; errors shown, not swallowed;
// the environment switcher; sparklines (uPlot) from the stats history.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  // ---- errors: a 401 goes to the login page, anything else says what the server said
  function flash(text, kind) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = "flash " + (kind || "error");
    el.hidden = !text;
  }
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    if (xhr.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
      return;
    }
    var message = xhr.status + " " + xhr.statusText;
    try { message = JSON.parse(xhr.responseText).message || message; } catch (err) { /* not JSON */ }
    flash(message, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    flash("the agent did not answer: try again in a moment", "error");
  });
  document.addEventListener("htmx:beforeRequest", function (e) {  // a new action: the last one's words go
    var verb = e.detail.requestConfig && e.detail.requestConfig.verb;
    if (verb && verb !== "get") flash("", "");
  });

  // ---- the live feed
  var TOPICS = ["host", "stack", "service", "instance", "upgrade", "environment"];
  var WATCHDOG_MS = 25000;  // the server pings every 10 s
  var RETRY_MAX_MS = 5000;
  var source = null, watchdog = null, retryMs = 500, everConnected = false;

  function banner(show, text) {
    var el = document.getElementById("live-banner");
    if (!el) return;
    if (text) el.querySelector("strong").textContent = text;
    el.hidden = !show;
    document.body.classList.toggle("live-down", show);
  }
  function fire(topic) {
    htmx.trigger(document.body, "live:" + topic, {});
  }
  function alive() {
    window.clearTimeout(watchdog);
    watchdog = window.setTimeout(function () { lost(); reconnect(); }, WATCHDOG_MS);
  }
  function lost() {
    banner(true, "Live updates stopped");
  }
  function reconnect() {
    if (source) { source.close(); source = null; }
    window.setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  }
  function connect() {
    var url = document.body.getAttribute("data-live");
    if (!url || typeof EventSource === "undefined") return;
    source = new EventSource(url);
    source.addEventListener("hello", function () {
      retryMs = 500;
      alive();
      banner(false);
      document.body.setAttribute("data-live-state", "open");
      if (everConnected) TOPICS.forEach(fire);  // what changed while we were away
      everConnected = true;
    });
    source.addEventListener("ping", alive);
    TOPICS.forEach(function (topic) {
      source.addEventListener(topic, function () { alive(); fire(topic); });
    });
    source.addEventListener("all", function () { alive(); TOPICS.forEach(fire); });
    source.addEventListener("session", function (e) {
      source.close();
      window.clearTimeout(watchdog);
      banner(true, "Your session ended (" + e.data + "): log in again");
    });
    source.onerror = function () {
      document.body.setAttribute("data-live-state", "down");
      lost();
      if (source.readyState === EventSource.CLOSED) reconnect();  // else the browser retries by itself
    };
  }

  // ---- stats: <td data-stats="URL"> holding <x data-latest="cpu_percent"> and <div data-series="…">:
  // the latest sample's figure and a sparkline (uPlot) of the history ({"samples": [{t, …}]}).
  var STATS_EVERY_MS = 15000;
  function pick(sample, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? null : v[k]; }, sample);
  }
  function human(value, unit) {
    if (typeof value !== "number") return "–";
    if (unit === "bytes") return value >= 10 * 1073741824 ? (value / 1073741824).toFixed(1) + " GiB" : Math.round(value / 1048576) + " MiB";
    if (unit === "%") return (Math.round(value * 10) / 10) + " %";
    return String(value);
  }
  function draw(el, samples) {
    var series = el.getAttribute("data-series");
    var xs = [], ys = [];
    samples.forEach(function (s) {
      var y = pick(s, series);
      if (typeof s.t === "number" && typeof y === "number") { xs.push(s.t); ys.push(y); }
    });
    el.textContent = "";
    if (xs.length < 2 || typeof uPlot === "undefined") {
      el.classList.add("empty");
      el.textContent = "no history yet";
      return;
    }
    el.classList.remove("empty");
    new uPlot({
      width: el.clientWidth || 160, height: 36, cursor: { show: false }, legend: { show: false },
      axes: [{ show: false }, { show: false }], scales: { x: { time: true } },
      series: [{}, { stroke: "#2b6cb0", fill: "rgba(43,108,176,0.15)", width: 1 }]
    }, [xs, ys], el);
  }
  var statsCache = {};
  function stats(url) {  // one request per URL and round, however many cells show it
    var now = Date.now(), hit = statsCache[url];
    if (hit && now - hit.at < STATS_EVERY_MS - 500) return hit.promise;
    var promise = fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { samples: [], error: r.status }; })
      .catch(function () { return { samples: [], error: "unreachable" }; });
    statsCache[url] = { at: now, promise: promise };
    return promise;
  }
  function fill(cell) {
    stats(cell.getAttribute("data-stats")).then(function (body) {
      var samples = body.samples || [];
      var last = samples.length ? samples[samples.length - 1] : null;
      cell.querySelectorAll("[data-latest]").forEach(function (el) {
        el.textContent = last ? human(pick(last, el.getAttribute("data-latest")), el.getAttribute("data-unit"))
          : (body.error ? "no figures (" + body.error + ")" : "–");
      });
      cell.querySelectorAll("[data-series]").forEach(function (el) { draw(el, samples); });
    });
  }
  function allStats(root) {
    (root || document).querySelectorAll("[data-stats]").forEach(fill);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
    allStats(document);
    window.setInterval(function () { if (!document.hidden) allStats(document); }, STATS_EVERY_MS);
    connect();
  });
  document.addEventListener("htmx:afterSettle", function (e) { allStats(e.detail.elt); });
  document.addEventListener("corral:done", function (e) { flash(e.detail.value, "ok"); });
})();
