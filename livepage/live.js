"use strict";
// The live view polls the same URL with ?format=json every second. Every
// value is inserted as text (textContent), never as markup.
(function () {
  var POLL_MS = 1000;
  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      for (var k in props) {
        if (k === "cls") el.className = props[k];
        else if (props[k] !== undefined && props[k] !== null) el.setAttribute(k, String(props[k]));
      }
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  function set(id) {
    var el = document.getElementById(id);
    while (el.firstChild) el.removeChild(el.firstChild);
    for (var i = 1; i < arguments.length; i++) add(el, arguments[i]);
  }
  function dur(ns) {
    var ms = ns / 1e6;
    if (ms < 1) return "<1 ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    var m = Math.floor(s / 60);
    return m + " min " + Math.round(s - 60 * m) + " s";
  }
  var now = 0;
  function ago(t) {
    if (!t) return "";
    var d = now - Date.parse(t);
    return d < 1000 ? "just now" : dur(d * 1e6) + " ago";
  }
  function clock(t) { return t ? new Date(Date.parse(t)).toLocaleTimeString() : ""; }
  function rate(l) {
    if (!l) return "—";
    var parts = [l.rate === null ? "unpaced" : fmt(l.rate) + " req/s"];
    if (l.rate !== null) parts.push("burst " + (l.burst || 1));
    parts.push(l.max_in_flight ? l.max_in_flight + " in flight" : "no cap");
    return parts.join(" · ");
  }
  function fmt(x) { return Math.round(x * 1000) / 1000; }
  function same(a, b) { return a && b && a.rate === b.rate && (a.burst || 1) === (b.burst || 1) && a.max_in_flight === b.max_in_flight; }
  function pill(kind, text) { return h("span", { cls: "pill " + kind }, text); }
  var kindClass = { waited: "warn", refused: "bad", forwarded: "info", forward_failed: "bad", learned: "ok", paused: "warn" };

  function hostRow(x) {
    var limit = [h("div", null, rate(x.in_force || x.configured))];
    if (x.configured && x.in_force && !same(x.configured, x.in_force))
      limit.push(h("div", { cls: "mute small" }, "configured: " + rate(x.configured)));
    if (x.learned_rate)
      limit.push(h("div", { cls: "small" }, "pace " + fmt(x.learned_rate) + " req/s from ", h("code", null, x.learned_rate_header), " · " + ago(x.learned_rate_at)));
    if (x.learned_max_in_flight)
      limit.push(h("div", { cls: "small" }, "cap " + x.learned_max_in_flight + " from ", h("code", null, x.learned_max_in_flight_header), " · " + ago(x.learned_max_in_flight_at)));
    var pause = "—";
    if (x.paused) {
      var left = Date.parse(x.paused_until) - now;
      pause = [pill("warn", "paused " + dur(Math.max(0, left) * 1e6)),
        h("div", { cls: "small" }, "until " + clock(x.paused_until))];
      if (x.pause_cause) pause.push(h("div", { cls: "small pause-cause" }, x.pause_cause.detail));
    } else if (x.pause_cause) {
      pause = h("span", { cls: "mute small" }, "last: " + x.pause_cause.detail + ", ended " + ago(x.pause_cause.until));
    }
    var waited = [String(x.waited)];
    if (x.waited) waited.push(h("div", { cls: "mute small" }, "avg " + dur(x.wait_total_ns / x.waited)), h("div", { cls: "mute small" }, "max " + dur(x.max_wait_ns)));
    var cap = x.in_force && x.in_force.max_in_flight ? " / " + x.in_force.max_in_flight : "";
    return h("tr", { "data-host": x.key },
      h("td", { cls: "mono host" }, x.key),
      h("td", { cls: "limit" }, limit),
      h("td", { cls: "num" }, x.tokens === null ? "—" : fmt(x.tokens)),
      h("td", { cls: "num" }, x.has_state ? x.in_flight + cap : "—"),
      h("td", { cls: "num" }, x.has_state ? String(x.queued) : "—"),
      h("td", { cls: "pause" }, pause),
      h("td", { cls: "num" }, String(x.admitted)),
      h("td", { cls: "num" }, waited),
      h("td", { cls: "num" }, String(x.refused)),
      h("td", { cls: "num" }, String(x.forwarded)),
      h("td", { cls: "num" }, String(x.forward_failed)));
  }
  function table(head, rows, empty) {
    if (!rows.length) return h("div", { cls: "empty" }, empty);
    return h("table", null, h("thead", null, h("tr", null, head.map(function (c) { return h("th", null, c); }))), h("tbody", null, rows));
  }
  function eventDetail(e) {
    var out = [];
    if (e.kind === "waited" || (e.kind === "refused" && e.wait_ns)) out.push("wait " + dur(e.wait_ns));
    if (e.reason) out.push("reason " + e.reason);
    if (e.status) out.push("status " + e.status);
    if (e.header && (e.detail || "").indexOf(e.header) < 0) out.push(e.header);
    if (e.job_id) out.push("job " + e.job_id);
    if (e.detail) out.push(e.detail);
    return out.join(" · ");
  }
  function render(s) {
    now = Date.parse(s.now);
    set("limiter", (s.limiter === "memory" ? "in-memory limiter" : s.limiter + " (what this process saw)") +
      (s.recording ? " · recording since " + clock(s.since) : " · recording off"));
    var tot = { admitted: 0, waited: 0, refused: 0, forwarded: 0, forward_failed: 0 }, paused = 0;
    s.hosts.forEach(function (x) { for (var k in tot) tot[k] += x[k]; if (x.paused) paused++; });
    set("cards", [["hosts", s.hosts.length], ["paused", paused], ["admitted", tot.admitted], ["waited", tot.waited],
      ["refused", tot.refused], ["forwarded", tot.forwarded], ["forward failed", tot.forward_failed]].map(function (c) {
      return h("div", { cls: "card" }, h("div", { cls: "v" }, String(c[1])), h("div", { cls: "k" }, c[0]));
    }));
    set("hosts-count", String(s.hosts.length));
    set("hosts", table(["Host", "Limit", "Tokens", "In flight", "Queued", "Pause", "Admitted", "Waited", "Refused", "Forwarded", "Failed fwd"],
      s.hosts.map(hostRow), s.recording ? "No host called yet." : "Recording is off."));
    var fw = s.forwarded.slice().reverse();
    set("fwd-count", String(fw.length));
    set("forwarded", table(["Time", "Host", "Reason", "Upstream status", "Job ID", "Idempotent key"], fw.map(function (e) {
      return h("tr", null, h("td", { cls: "small" }, clock(e.time)), h("td", { cls: "mono" }, e.host), h("td", null, pill("info", e.reason)),
        h("td", { cls: "num" }, e.status ? String(e.status) : "—"), h("td", { cls: "mono job-id" }, e.job_id), h("td", { cls: "mono" }, e.idempotent_key || ""));
    }), "No request forwarded."));
    var ev = s.events.slice().reverse();
    set("events-count", String(ev.length));
    set("events", table(["Time", "Host", "Outcome", "Detail"], ev.map(function (e) {
      return h("tr", null, h("td", { cls: "small" }, clock(e.time)), h("td", { cls: "mono" }, e.host || ""),
        h("td", null, pill(kindClass[e.kind] || "mute", e.kind)), h("td", { cls: "small" }, eventDetail(e)));
    }), "No waits, refusals, forwards or learned limits yet."));
  }
  function poll() {
    fetch("?format=json", { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (s) {
        render(s);
        document.getElementById("dot").className = "dot";
        set("status", "live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function (err) {
        document.getElementById("dot").className = "dot off";
        set("status", "disconnected: " + err.message);
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
